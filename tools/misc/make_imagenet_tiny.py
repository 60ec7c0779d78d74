#!/usr/bin/env python
"""Generate the embedded classification set: synthetic textures in real ImageNet layout.

    python tools/misc/make_imagenet_tiny.py [--out data/imagenet_tiny] [--train 24] [--val 6]

Writes the layout mmpretrain's ``ImageNet`` dataset reads for ImageNet-1k:
``train/<wnid>/<wnid>_<n>.JPEG``, ``val/ILSVRC2012_val_%08d.JPEG`` and
``meta/{train,val}.txt`` (``path label`` per line, labels 0..999 in ImageNet-1k's order).
Four classes are used, filed under ImageNet's first four synsets (0 tench, 1 goldfish,
2 great white shark, 3 tiger shark; the images are textures, not fish: horizontal stripes,
vertical stripes, discs and checkerboards, in random colours), so the 1000-way head, the
dataset and the ``Accuracy`` metric run unchanged and a config switches to ImageNet by
changing ``data_root`` only. ``--train``/``--val`` are images per class. Generation is
deterministic for a given seed, and the output appears atomically.
"""
import argparse
import os
import os.path as osp
import sys

import numpy as np
from PIL import Image

from pvt_mm.toy_data import ToyDataset, build_parser as toy_parser, generator_main

SIZE = 80
# (ImageNet-1k label, WordNet id, pattern)
CLASSES = ((0, 'n01440764', 'hstripes'), (1, 'n01443537', 'vstripes'),
           (2, 'n01484850', 'discs'), (3, 'n01491361', 'checker'))


def make_image(pattern: str, rng) -> Image.Image:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    period = rng.uniform(8, 16)
    phase = rng.uniform(0, period)
    if pattern == 'hstripes':
        mask = ((yy + phase) // (period / 2)) % 2 == 0
    elif pattern == 'vstripes':
        mask = ((xx + phase) // (period / 2)) % 2 == 0
    elif pattern == 'checker':
        mask = (((yy + phase) // period) + ((xx + phase) // period)) % 2 == 0
    else:  # a few discs
        mask = np.zeros((SIZE, SIZE), bool)
        for _ in range(rng.integers(2, 5)):
            cy, cx, r = rng.uniform(10, SIZE - 10), rng.uniform(10, SIZE - 10), rng.uniform(6, 14)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    fg, bg = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    while np.abs(fg - bg).sum() < 120:  # keep the pattern visible
        fg = rng.uniform(0, 255, 3)
    pixels = np.where(mask[..., None], fg, bg) + rng.normal(0, 12, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write(root: str, num_train: int, num_val: int, rng) -> str:
    """Draw ``num_train`` / ``num_val`` images per class into ``root`` with the meta lists."""
    os.makedirs(osp.join(root, 'meta'))
    os.makedirs(osp.join(root, 'val'))
    train_lines, val_lines, val_index = [], [], 0
    for label, wnid, pattern in CLASSES:
        os.makedirs(osp.join(root, 'train', wnid))
        for n in range(1, num_train + 1):
            rel = f'{wnid}/{wnid}_{n}.JPEG'
            make_image(pattern, rng).save(osp.join(root, 'train', rel), format='JPEG', quality=95)
            train_lines.append(f'{rel} {label}')
    for n in range(num_val):  # ImageNet's val folder is flat; labels come from meta/val.txt
        for label, _wnid, pattern in CLASSES:
            val_index += 1
            rel = f'ILSVRC2012_val_{val_index:08d}.JPEG'
            make_image(pattern, rng).save(osp.join(root, 'val', rel), format='JPEG', quality=95)
            val_lines.append(f'{rel} {label}')
    for name, lines in (('train.txt', train_lines), ('val.txt', val_lines)):
        with open(osp.join(root, 'meta', name), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return (f'{len(train_lines)} training and {len(val_lines)} validation images '
            f'({len(CLASSES)} classes)')


SPEC = ToyDataset(name='imagenet_tiny', description=__doc__.splitlines()[0], default_train=24,
                  default_val=6, done_marker='meta/val.txt', write=write,
                  train_help='training images per class', val_help='validation images per class')


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    return toy_parser(SPEC)


if __name__ == '__main__':
    sys.exit(generator_main(SPEC))
