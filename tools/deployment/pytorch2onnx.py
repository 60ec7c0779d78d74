#!/usr/bin/env python
"""Export a config's model (or its backbone) to ONNX: one file for any batch and size.

    python tools/deployment/pytorch2onnx.py CONFIG [--checkpoint CKPT] --out FILE.onnx
        [--shape H W] [--part model|backbone] [--img-shapes] [--verify [--image IMG]]
        [--opset 23] [--attention onnx|ort] [--cfg-options k=v ...]

``--verify`` runs the file in ONNX Runtime and the model in PyTorch on random images (or
``--image``, which a trained detector needs to find something to compare) at ``--shape`` and
at a second size that is not a multiple of 32; it exits non-zero when they
disagree beyond the tolerances (maps / logits 1e-4 relative, boxes 0.01 px, scores 1e-4,
segmentation labels 99.99 % of pixels).
"""
import argparse
import sys
from pathlib import Path
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from pvt_mm.capabilities import ONNX_EXPORT, exit_unless
from pvt_mm.checkpoint import CheckpointError
from pvt_mm.cli import add_cfg_options, run_tool

exit_unless(ONNX_EXPORT)  # before pvt_mm.deploy, which needs the exporter's torch
from pvt_mm.deploy import (ATTENTION_MODES, DEFAULT_OPSET, PARTS, DeployError, build_graph, export_onnx,
                           load_model, verify_onnx)
from pvt_mm.deploy.verify import image_batch


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description='Export a pvt_mm model to ONNX')
    parser.add_argument('config', help='config file')
    parser.add_argument('--checkpoint', help='weights (default: the config\'s initialisation)')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, default=(256, 320), metavar=('H', 'W'),
                        help='example input size for tracing and --verify (any size works '
                        'with the exported file)')
    parser.add_argument('--part', choices=PARTS, default='model',
                        help='model: end to end; backbone: the four stage maps')
    parser.add_argument('--img-shapes', action='store_true',
                        help='--part backbone: a second input img_shapes (B, 2), each image\'s '
                        '(h, w) before padding, for batch-invariant maps (the end-to-end '
                        'RetinaNet always takes it)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET)
    parser.add_argument('--verify', action='store_true',
                        help='compare ONNX Runtime with PyTorch; exit 1 beyond the tolerances')
    parser.add_argument('--image', help='with --verify: compare on this image (resized to each '
                        'checked size) instead of random pixels, on which a trained detector '
                        'finds nothing to compare')
    parser.add_argument('--attention', choices=ATTENTION_MODES, default='onnx',
                        help="onnx: ONNX Attention (any runtime); ort: ONNX Runtime's "
                        'MultiHeadAttention (FlashAttention on CPU, ONNX Runtime only)')
    add_cfg_options(parser, example='model.backbone.arch=b2_li')
    parser.add_argument('--verbose', action='store_true', help="print the exporter's steps")
    return parser


def export(args: argparse.Namespace) -> None:
    """Export (and with ``--verify`` check) as ``args`` asks, printing what was done."""
    if args.image is not None and not args.verify:
        raise DeployError('--image is the picture --verify compares on; add --verify.')
    if args.image is not None and not Path(args.image).is_file():
        raise DeployError(f'--image {args.image!r} does not exist; give an image file the model '
                          'should find something in (checked before exporting).')
    model, _ = load_model(args.config, args.checkpoint, args.cfg_options)
    out = export_onnx(model, args.out, part=args.part, shape=tuple(args.shape),
                      opset=args.opset, verbose=args.verbose,
                      attention=args.attention, img_shapes=args.img_shapes)
    print(f'wrote {out} (part={args.part}, opset {args.opset}, dynamic batch/height/width)')
    if args.verify:
        h, w = args.shape
        graph = build_graph(model, args.part, img_shapes=args.img_shapes)
        for shape in [(h, w), (h + 33, w + 17)]:
            images = None if args.image is None else image_batch(model, args.image, shape, 2)
            for line in verify_onnx(graph, out, shapes=[shape], images=images):
                print(f'verify ok: {line}')


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: export(args), (DeployError, CheckpointError, FileNotFoundError),
                    status=1)


if __name__ == '__main__':
    sys.exit(main())
