#!/usr/bin/env python
"""Generate the embedded detection set: synthetic images in real COCO layout.

    python tools/misc/make_shapes_coco.py [--out data/shapes_coco] [--train 400] [--val 64]
        [--tune 0] [--shapes 3 6] [--mixed-sizes MIN MAX]

Writes ``annotations/instances_{train,val}2017.json``, ``train2017/`` and ``val2017/``
(and, with ``--tune N``, ``instances_tune2017.json`` and ``tune2017/``).
Each 320x256 image holds 3-6 filled shapes (``--shapes``) on a noisy background, annotated
with boxes and polygon masks. The json lists COCO's 80 categories with their real ids, and
the shapes are filed under three of them (circle: 'sports ball', triangle: 'kite',
rectangle: 'tv'), so mmdet's ``CocoDataset`` and ``CocoMetric`` run unchanged (the shapes
configs keep those 3 classes through the dataset's ``metainfo``). Generation is
deterministic for a given seed, and the output appears atomically (written to a temporary
folder, then renamed).

The two splits are drawn from independent random streams (``numpy`` seeds ``[seed, 0]`` for
training and ``[seed, 1]`` for validation), so the held-out images are never training
images, whatever the split sizes. ``--tune N`` adds a third split for choosing a recipe,
drawn like the training images from its own stream ``[seed, 2]``: settings are compared on
it, so that the held-out ``val`` images stay unseen until the final evaluation. An existing set is reused only if it was made with the
same arguments (recorded in the json's ``info``); otherwise it is regenerated.

``--mixed-sizes MIN MAX`` gives every image its own width and height, each drawn uniformly
from ``MIN..MAX`` pixels (a seeded stream of its own per split), instead of 320x256: a
mixed-size set, on which a batch of several images is padded to its largest, for checking
that a detector gives each image the same result alone and in a batch
(:mod:`pvt_mm.batch_invariance_check`). Without it the output is unchanged, bit for bit.
"""
import argparse
import json
import math
import os
import os.path as osp
import shutil
import sys
import tempfile
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
            25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49,
            50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74,
            75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]
SHAPE_CATEGORY = {'circle': 'sports ball', 'triangle': 'kite', 'rectangle': 'tv'}
WIDTH, HEIGHT = 320, 256
SET_VERSION = 3  # bump when the drawing changes, so that old sets are regenerated
# 3-6 shapes per image by default (fewer where they do not fit): more boxes per image = more
# to learn from per training step (docs/get_started.md's main-job section has the runs). Circumradius
# 18-48 px: boxes of about 30-96 px.
MIN_SHAPES, MAX_SHAPES, RADIUS = 3, 6, (18, 48)
# --mixed-sizes: the smallest side that holds the largest shape (diameter 96 px) with room.
MIN_MIXED_SIDE = 128


def existing_info(out_dir: str):
    """The ``info`` both splits of an existing set were made with, or None."""
    infos = []
    for split in ('train', 'val', 'tune'):
        path = osp.join(out_dir, 'annotations', f'instances_{split}2017.json')
        try:
            with open(path) as f:
                infos.append(json.load(f).get('info'))
        except OSError:
            if split == 'tune' and infos[0] and not infos[0].get('tune'):
                break  # made without a tuning split
            return None
        except ValueError:
            return None
    return infos[0] if all(info == infos[0] for info in infos) else None


def coco_categories() -> list:
    from mmdet.datasets import CocoDataset
    names = CocoDataset.METAINFO['classes']
    assert len(names) == len(COCO_IDS) == 80
    return [dict(id=i, name=n, supercategory='none') for i, n in zip(COCO_IDS, names)]


def shape_polygon(kind: str, cx: float, cy: float, r: float, rng) -> list:
    if kind == 'circle':
        return [(cx + r * math.cos(t), cy + r * math.sin(t))
                for t in np.linspace(0, 2 * math.pi, 24, endpoint=False)]
    if kind == 'triangle':
        a0 = rng.uniform(0, 2 * math.pi)
        return [(cx + r * math.cos(a0 + k * 2 * math.pi / 3), cy + r * math.sin(a0 + k * 2 * math.pi / 3))
                for k in range(3)]
    w, h = r * rng.uniform(0.7, 1.0), r * rng.uniform(0.7, 1.0)
    return [(cx - w, cy - h), (cx + w, cy - h), (cx + w, cy + h), (cx - w, cy + h)]


def polygon_area(points) -> float:
    xs, ys = zip(*points)
    return 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))


def image_sizes(num_images: int, mixed_sizes: Optional[Sequence[int]],
                seed: Sequence[int]) -> List[Tuple[int, int]]:
    """``(width, height)`` of each image of a split: 320x256 each, or with ``mixed_sizes``
    ``(MIN, MAX)`` each side drawn uniformly from ``MIN..MAX`` by the random stream ``seed``
    (a stream of its own, so the drawing stream is the same as without it)."""
    if mixed_sizes is None:
        return [(WIDTH, HEIGHT)] * num_images
    rng = np.random.default_rng(list(seed))
    sides = rng.integers(mixed_sizes[0], mixed_sizes[1] + 1, size=(num_images, 2))
    return [(int(w), int(h)) for w, h in sides]


def make_split(out_dir: str, split: str, num_images: int, rng, categories, first_ann_id: int,
               info: dict, shapes: tuple = (MIN_SHAPES, MAX_SHAPES),
               sizes: Optional[Sequence[Tuple[int, int]]] = None):
    name_to_id = {c['name']: c['id'] for c in categories}
    img_dir = osp.join(out_dir, f'{split}2017')
    os.makedirs(img_dir)
    images, annotations, ann_id = [], [], first_ann_id
    sizes = sizes if sizes is not None else [(WIDTH, HEIGHT)] * num_images
    for index, (width, height) in zip(range(num_images), sizes):
        image_id = index + 1
        base = rng.uniform(40, 200, size=3)
        pixels = base + rng.normal(0, 18, size=(height, width, 3))
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        placed = []
        for _ in range(rng.integers(shapes[0], shapes[1] + 1)):
            # Shapes do not touch: two shapes of the image's similar colours that overlapped
            # merged into one blob whose outline matched neither class.
            for _attempt in range(20):
                r = rng.uniform(*RADIUS)
                cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
                if all(math.hypot(cx - px, cy - py) > r + pr + 2 for px, py, pr in placed):
                    break
            else:
                continue
            placed.append((cx, cy, r))
            kind = rng.choice(list(SHAPE_CATEGORY))
            polygon = shape_polygon(kind, cx, cy, r, rng)
            color = tuple(int(c) for c in (255 - base + rng.uniform(-40, 40, 3)).clip(0, 255))
            draw.polygon(polygon, fill=color)
            xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
            x0, y0 = max(min(xs), 0), max(min(ys), 0)
            x1, y1 = min(max(xs), width), min(max(ys), height)
            annotations.append(dict(
                id=ann_id, image_id=image_id, category_id=name_to_id[SHAPE_CATEGORY[kind]],
                bbox=[round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                area=round(polygon_area(polygon), 2), iscrowd=0,
                segmentation=[[round(v, 2) for p in polygon for v in p]]))
            ann_id += 1
        file_name = f'{image_id:012d}.jpg'
        img.save(osp.join(img_dir, file_name), quality=95)
        images.append(dict(id=image_id, file_name=file_name, width=width, height=height))
    with open(osp.join(out_dir, 'annotations', f'instances_{split}2017.json'), 'w') as f:
        json.dump(dict(info=info, images=images, annotations=annotations,
                       categories=categories), f)
    return ann_id


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/shapes_coco')
    parser.add_argument('--train', type=int, default=400, help='number of training images')
    parser.add_argument('--val', type=int, default=64, help='number of validation images')
    parser.add_argument('--tune', type=int, default=0,
                        help='number of images of a tuning split (0: none), from its own '
                        'random stream, for comparing settings without the held-out images')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--shapes', type=int, nargs=2, default=(MIN_SHAPES, MAX_SHAPES),
                        metavar=('MIN', 'MAX'), help='shapes per image (fewer if they do not fit)')
    parser.add_argument('--mixed-sizes', type=int, nargs=2, default=None, metavar=('MIN', 'MAX'),
                        help='give each image its own width and height, drawn from MIN..MAX '
                        f'pixels (MIN >= {MIN_MIXED_SIDE}); default: every image {WIDTH}x{HEIGHT}')
    parser.add_argument('--force', action='store_true', help='regenerate even if it exists')
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    if args.train < 1 or args.val < 1:
        parser.error('--train and --val must be at least 1')
    if args.tune < 0:
        parser.error(f'--tune {args.tune}: must be 0 (no tuning split) or more')
    if not 1 <= args.shapes[0] <= args.shapes[1]:
        parser.error(f'--shapes {args.shapes[0]} {args.shapes[1]}: need 1 <= MIN <= MAX')
    mixed = args.mixed_sizes
    if mixed is not None and not MIN_MIXED_SIDE <= mixed[0] <= mixed[1]:
        parser.error(f'--mixed-sizes {mixed[0]} {mixed[1]}: need {MIN_MIXED_SIDE} <= MIN <= MAX '
                     f'(a side under {MIN_MIXED_SIDE} px cannot hold the largest shape)')
    info = dict(description='pvt_mm shapes set', version=SET_VERSION, seed=args.seed,
                train=args.train, val=args.val, tune=args.tune, shapes=list(args.shapes),
                display_names={v: k for k, v in SHAPE_CATEGORY.items()})
    if mixed is not None:  # only then: a default set's info (and json) stays as it was
        info['mixed_sizes'] = list(mixed)
    if existing_info(args.out) == info and not args.force:
        print(f'{args.out} already exists (same arguments); use --force to regenerate')
        return 0
    categories = coco_categories()
    parent = osp.dirname(osp.abspath(args.out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.shapes_coco_', dir=parent)
    try:
        os.makedirs(osp.join(tmp, 'annotations'))
        # Sizes come from streams [seed, split, 1], apart from the drawing streams [seed, split].
        next_id = make_split(tmp, 'train', args.train, np.random.default_rng([args.seed, 0]),
                             categories, 1, info, args.shapes,
                             image_sizes(args.train, mixed, (args.seed, 0, 1)))
        next_id = make_split(tmp, 'val', args.val, np.random.default_rng([args.seed, 1]),
                             categories, next_id, info, args.shapes,
                             image_sizes(args.val, mixed, (args.seed, 1, 1)))
        if args.tune:
            make_split(tmp, 'tune', args.tune, np.random.default_rng([args.seed, 2]),
                       categories, next_id, info, args.shapes,
                       image_sizes(args.tune, mixed, (args.seed, 2, 1)))
        if osp.exists(args.out):
            shutil.rmtree(args.out)
        os.replace(tmp, args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tune = f', {args.tune} tuning' if args.tune else ''
    sizes = f' ({mixed[0]}-{mixed[1]} px per side)' if mixed else ''
    print(f'wrote {args.train} training{tune} and {args.val} held-out validation images{sizes} '
          f'to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
