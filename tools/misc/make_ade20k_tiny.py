#!/usr/bin/env python
"""Generate the embedded segmentation set: synthetic scenes in real ADE20K layout.

    python tools/misc/make_ade20k_tiny.py [--out data/ade20k_tiny] [--train 32] [--val 8]
        [--mixed-sizes MIN MAX]

Writes ``images/{training,validation}/ADE_{train,val}_%08d.jpg`` and
``annotations/{training,validation}/ADE_{train,val}_%08d.png``, the layout of
``ADEChallengeData2016``. Label maps hold ADE20K's raw ids: 0 is "other" (ignored after
``reduce_zero_label``, as in ADE20K) and 1..150 are the 150 classes in ADE20K's order, so
mmseg's ``ADE20KDataset`` and ``IoUMetric`` run unchanged and a config switches to the real
data by changing ``data_root`` only. Each 160x120 scene is sky over wall over floor with a
tree, a car and a person drawn in, region boundaries left as 0. Generation is deterministic
for a given seed, and the output appears atomically (temporary folder, then rename).

``--mixed-sizes MIN MAX`` draws every validation scene at its own width and height, each
drawn uniformly from ``MIN..MAX`` pixels (a seeded stream of its own), its label map drawn
with it: a held-out set on which a test batch of several images is padded to its largest,
for checking that a segmentor gives each image the same label map alone and in a batch
(:mod:`pvt_mm.batch_invariance_check`). Without it the output is unchanged, bit for bit. An
existing set is kept whatever it was made with: add ``--force`` to replace it.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from pvt_mm.toy_data import ToyDataset, build_parser as toy_parser, generator_main

WIDTH, HEIGHT = 160, 120
# --mixed-sizes: the smallest side that holds the largest car (45 px wide) and a tree.
MIN_MIXED_SIDE = 64
# ADE20K raw ids (1-based index into mmseg's ADE20KDataset.METAINFO['classes'];
# tests/test_segmentation.py checks them against mmseg).
ADE_IDS = {'wall': 1, 'sky': 3, 'floor': 4, 'tree': 5, 'person': 13, 'car': 21}
BASE_COLOURS = {'wall': (170, 160, 140), 'sky': (120, 170, 230), 'floor': (110, 80, 50),
                'tree': (40, 120, 40), 'person': (220, 180, 150), 'car': (200, 30, 30)}


def make_scene(rng, width: int = WIDTH, height: int = HEIGHT):
    """One ``width`` x ``height`` image and its raw-id label map (the same random draws at
    any size)."""
    label = Image.new('L', (width, height), 0)
    img = Image.new('RGB', (width, height))
    draw_l, draw_i = ImageDraw.Draw(label), ImageDraw.Draw(img)

    def colour(name):
        return tuple(int(c) for c in np.clip(np.array(BASE_COLOURS[name]) + rng.normal(0, 15, 3), 0, 255))

    horizon = int(rng.uniform(0.25, 0.45) * height)
    floor_line = int(rng.uniform(0.65, 0.8) * height)
    for name, box in (('sky', (0, 0, width, horizon)), ('wall', (0, horizon, width, floor_line)),
                      ('floor', (0, floor_line, width, height))):
        draw_i.rectangle(box, fill=colour(name))
        draw_l.rectangle(box, fill=ADE_IDS[name])
    # Unlabelled ("other", 0) seams between the regions.
    for y in (horizon, floor_line):
        draw_l.rectangle((0, y - 1, width, y + 1), fill=0)
    # A tree (disc on a trunk), a car (box) and a person (ellipse), at random places.
    cx, r = rng.uniform(20, width - 20), rng.uniform(10, 20)
    cy = horizon + rng.uniform(-5, 10)
    for draw, fill in ((draw_i, colour('tree')), (draw_l, ADE_IDS['tree'])):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        draw.rectangle((cx - 3, cy + r - 2, cx + 3, floor_line), fill=fill)
    w, h = rng.uniform(25, 45), rng.uniform(12, 20)
    x0 = rng.uniform(0, width - w)
    y1 = rng.uniform(floor_line, height - 2)
    for draw, fill in ((draw_i, colour('car')), (draw_l, ADE_IDS['car'])):
        draw.rectangle((x0, y1 - h, x0 + w, y1), fill=fill)
    pw, ph = rng.uniform(7, 12), rng.uniform(25, 40)
    px = rng.uniform(0, width - pw)
    py1 = rng.uniform(floor_line - 5, height - 2)
    for draw, fill in ((draw_i, colour('person')), (draw_l, ADE_IDS['person'])):
        draw.ellipse((px, py1 - ph, px + pw, py1), fill=fill)
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0, 8, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), label


def image_sizes(num_images: int, mixed_sizes: Optional[Sequence[int]],
                rng) -> List[Tuple[int, int]]:
    """``(width, height)`` of each scene: 160x120 each, or with ``mixed_sizes`` ``(MIN, MAX)``
    each side drawn uniformly from ``MIN..MAX`` by ``rng``."""
    if mixed_sizes is None:
        return [(WIDTH, HEIGHT)] * num_images
    sides = rng.integers(mixed_sizes[0], mixed_sizes[1] + 1, size=(num_images, 2))
    return [(int(w), int(h)) for w, h in sides]


def make_split(root: str, split: str, prefix: str, num_images: int, rng,
               sizes: Optional[Sequence[Tuple[int, int]]] = None) -> None:
    img_dir, ann_dir = osp.join(root, 'images', split), osp.join(root, 'annotations', split)
    os.makedirs(img_dir)
    os.makedirs(ann_dir)
    sizes = sizes or [(WIDTH, HEIGHT)] * num_images
    for index in range(1, num_images + 1):
        img, label = make_scene(rng, *sizes[index - 1])
        name = f'ADE_{prefix}_{index:08d}'
        img.save(osp.join(img_dir, name + '.jpg'), quality=95)
        label.save(osp.join(ann_dir, name + '.png'))


def write(root: str, num_train: int, num_val: int, rng,
          mixed_sizes: Optional[Sequence[int]] = None) -> str:
    """Draw the training and validation scenes into ``root``; with ``mixed_sizes`` each
    validation scene at its own size, from a stream spawned from ``rng``'s seed (so the
    drawing stream is the one without it)."""
    make_split(root, 'training', 'train', num_train, rng)
    sizes = None
    if mixed_sizes is not None:
        sizes = image_sizes(num_val, mixed_sizes,
                            np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0]))
    make_split(root, 'validation', 'val', num_val, rng, sizes)
    mixed = f' ({mixed_sizes[0]}-{mixed_sizes[1]} px per side)' if mixed_sizes else ''
    return f'{num_train} training and {num_val} validation scenes{mixed}'


class _MixedSizes(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        if not MIN_MIXED_SIDE <= values[0] <= values[1]:
            parser.error(f'--mixed-sizes {values[0]} {values[1]}: need {MIN_MIXED_SIDE} <= MIN '
                         f'<= MAX (a side under {MIN_MIXED_SIDE} px cannot hold the scene)')
        setattr(namespace, self.dest, list(values))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--mixed-sizes MIN MAX``."""
    parser.add_argument('--mixed-sizes', type=int, nargs=2, default=None, metavar=('MIN', 'MAX'),
                        action=_MixedSizes,
                        help='draw each validation scene at its own width and height, from '
                        f'MIN..MAX pixels (MIN >= {MIN_MIXED_SIDE}); default: every scene '
                        f'{WIDTH}x{HEIGHT}')


SPEC = ToyDataset(name='ade20k_tiny', description=__doc__.splitlines()[0], default_train=32,
                  default_val=8, done_marker='annotations/validation', write=write,
                  add_arguments=add_arguments)


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    return toy_parser(SPEC)


if __name__ == '__main__':
    sys.exit(generator_main(SPEC))
