#!/usr/bin/env python
"""Draw ground truth (thin dashed) and predictions (thick, score >= threshold) into one PNG.

    python tools/misc/draw_predictions.py ANN_FILE PREDS_PKL OUT.png [--num 4] [--cols 2]
        [--score-thr 0.3] [--img-dir DIR] [--title T] [--config CONFIG]

PREDS_PKL is written by ``tools/test.py CONFIG CKPT --out PREDS_PKL``; ANN_FILE is the COCO
json of the same split (images are read from the folder beside ``annotations/`` named after
the split, e.g. ``val2017/``, unless --img-dir is given). Pass the CONFIG that made the
predictions when its dataset keeps a subset of the json's classes (``metainfo``), so that
labels get the right names. See ``pvt_mm.visualization``.
"""
import argparse
import sys

from pvt_mm.visualization import draw_detections


def config_classes(config: str):
    """The class names of ``config``'s test dataset (its ``metainfo``), or None if it keeps
    all of the annotation file's categories."""
    from mmengine.config import Config
    loader = Config.fromfile(config).get('test_dataloader')
    if loader is None:
        raise ValueError(f'{config} has no test_dataloader; pass the config that made the '
                         'predictions')
    return (loader.dataset.get('metainfo') or {}).get('classes')


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('ann_file')
    parser.add_argument('preds')
    parser.add_argument('out')
    parser.add_argument('--num', type=int, default=4)
    parser.add_argument('--cols', type=int, default=2)
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--img-dir')
    parser.add_argument('--title', default='')
    parser.add_argument('--config', help='the config that made the predictions: its test '
                        "dataset's metainfo classes name the labels")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    try:
        classes = config_classes(args.config) if args.config else None
        out = draw_detections(args.ann_file, args.preds, args.out, num=args.num, cols=args.cols,
                              score_thr=args.score_thr, img_dir=args.img_dir, title=args.title,
                              classes=classes)
    except (OSError, ValueError, KeyError) as exc:
        sys.exit(f'error: {exc}')
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
