#!/usr/bin/env python
"""Export every PVT backbone preset once and check the one file against PyTorch at several
sizes: the issue-18 table (stage maps within 1e-4 relative at 224x224, 800x1333 and
481x623 from one dynamic export).

    python tools/deployment/check_archs.py [--archs tiny b2_li ...] [--shapes 224x224 ...]
        [--export-shape 224x224] [--json F]

Random weights (the config's initialisation, seed 0): equality does not depend on them.
Exits 1 if any arch fails to export or disagrees beyond the tolerance.
"""
import argparse
import json
import os
import sys
import tempfile
import time
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import torch

from pvt_mm.capabilities import ONNX_EXPORT, exit_unless

exit_unless(ONNX_EXPORT)  # before pvt_mm.deploy, which needs the exporter's torch
from pvt_mm.deploy import build_graph, export_onnx, load_model, verify_onnx
from pvt_mm.models.backbones import archs

#: A RetinaNet config per backbone type (a row's version picks it); only its backbone is exported.
CONFIGS = {'PVT': 'configs/retinanet/pvt_tiny_fpn_shapes.py',
           'PVTv2': 'configs/retinanet/pvtv2_b0_fpn_shapes.py'}


def _shape(text: str) -> tuple:
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a size like 800x1333')
    return h, w


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description='Export and check every PVT backbone preset')
    presets = archs.names()  # every row of the arch table
    parser.add_argument('--archs', nargs='+', default=list(presets), choices=presets,
                        metavar='ARCH', help=f'presets to check (default: all of {presets})')
    parser.add_argument('--shapes', nargs='+', type=_shape,
                        default=[(224, 224), (800, 1333), (481, 623)],
                        help='sizes checked with the one file (batch 1)')
    parser.add_argument('--export-shape', type=_shape, default=(224, 224),
                        help='example size used for the export')
    parser.add_argument('--json', help='write the results to this file')
    return parser


def parse_args() -> argparse.Namespace:
    parser = build_parser()
    return parser.parse_args()


def check_arch(arch: str, shapes, export_shape, tmp: str) -> dict:
    config = CONFIGS[archs.arch_row(arch).backbone_type]
    torch.manual_seed(0)
    model, _ = load_model(config, cfg_options={'model.backbone.arch': arch})
    path = os.path.join(tmp, f'{arch}.onnx')
    start = time.perf_counter()
    export_onnx(model, path, part='backbone', shape=export_shape)
    seconds = time.perf_counter() - start
    lines = verify_onnx(build_graph(model, 'backbone'), path, shapes=shapes, batch=1)
    return dict(arch=arch, export_s=round(seconds, 1), mib=round(os.path.getsize(path) / 2**20, 1),
                checks=lines)


def main() -> None:
    args = parse_args()
    results, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            try:
                result = check_arch(arch, args.shapes, args.export_shape, tmp)
            except Exception as exc:  # a sweep: report every arch, then exit 1
                result = dict(arch=arch, error=f'{type(exc).__name__}: {str(exc)[:500]}')
                failed.append(arch)
            results.append(result)
            print(json.dumps(result), flush=True)
            for name in os.listdir(tmp):
                os.remove(os.path.join(tmp, name))
    print('| arch | export s | file MiB | ' + ' | '.join(f'{h}x{w}' for h, w in args.shapes) + ' |')
    print('|---|---|---|' + '---|' * len(args.shapes))
    for r in results:
        if 'error' in r:
            print(f'| {r["arch"]} | failed: {r["error"]} |')
            continue
        errors = [line.split('per output ')[1].split(' (')[0] for line in r['checks']]
        print(f'| {r["arch"]} | {r["export_s"]:.0f} | {r["mib"]:.0f} | ' + ' | '.join(errors) + ' |')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
    if failed:
        sys.exit(f'error: {", ".join(failed)} failed (see above)')


if __name__ == '__main__':
    main()
