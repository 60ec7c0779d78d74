#!/usr/bin/env python
"""Tile the first N images of a directory into one PNG (e.g. drawn predictions).

    python tools/misc/image_grid.py DIR OUT.png [--num 4] [--cols 2]
"""
import argparse
import math
import os
import sys

from PIL import Image


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src_dir')
    parser.add_argument('out')
    parser.add_argument('--num', type=int, default=4)
    parser.add_argument('--cols', type=int, default=2)
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    if not os.path.isdir(args.src_dir):
        sys.exit(f'error: {args.src_dir!r} is not a directory')
    names = sorted(n for n in os.listdir(args.src_dir)
                   if n.lower().endswith(('.png', '.jpg', '.jpeg')))[:args.num]
    if not names:
        sys.exit(f'error: no images in {args.src_dir!r}')
    images = [Image.open(os.path.join(args.src_dir, n)).convert('RGB') for n in names]
    w, h = max(i.width for i in images), max(i.height for i in images)
    cols = min(args.cols, len(images))
    grid = Image.new('RGB', (cols * w, math.ceil(len(images) / cols) * h), 'white')
    for k, img in enumerate(images):
        grid.paste(img, ((k % cols) * w, (k // cols) * h))
    tmp = args.out + '.tmp.png'
    grid.save(tmp)
    os.replace(tmp, args.out)
    print(f'wrote {args.out} ({len(images)} images)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
