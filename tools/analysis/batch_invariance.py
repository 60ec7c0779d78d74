"""Batch invariance of the PVT backbones: an image alone against the same image in a padded batch.

For each preset (default: every row of the arch table) a backbone with random weights
(seeded, eval mode) runs one random image alone, padded only to its own size rounded up to
32 (as a batch of one is), and zero-padded inside each larger batch; the table gives the
largest relative difference in the image's region of each stage map (issue 27). The backbone
is told each image's valid size through the padding context and, where its ``forward`` has
one, the ``img_shapes`` argument, so the same command measures the backbone before and after
it reads them. The measuring lives in :mod:`pvt_mm.batch_invariance_check`.

Example (the issue's sizes)::

    python tools/analysis/batch_invariance.py --archs small b2 --image 512x672 \
        --batch 512x672 512x864 640x864
"""
import argparse
from typing import List, Optional

import torch

from pvt_mm.batch_invariance_check import build_backbone, measure_stages, stage_table
from pvt_mm.cli import hw_size, run_tool, with_copy
from pvt_mm.models.backbones.archs import names
from pvt_mm.timing import machine_line


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--archs', nargs='+', default=list(names()), choices=list(names()),
                        metavar='ARCH', help=f'presets (default: all of {", ".join(names())})')
    parser.add_argument('--image', type=hw_size, default=(512, 672), help='the image, HxW')
    parser.add_argument('--batch', type=hw_size, nargs='+', default=[(512, 672), (512, 864), (640, 864)],
                        help='padded batch sizes, HxW each (the image\'s own padded size gives '
                        'the numerical floor of a batch of two)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the weights and images')
    parser.add_argument('--withhold-sizes', action='store_true',
                        help='do not tell the backbone the valid sizes: how a padded batch ran '
                        'before batch invariance')
    parser.add_argument('--backbone-options', nargs='+', action=DictAction, default={},
                        help='more backbone arguments, key=value each')
    parser.add_argument('--out', help='also write the table (markdown) to this file')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> str:
        rows = {}
        for arch in args.archs:
            backbone = build_backbone(arch, args.seed, **args.backbone_options)
            rows[arch] = measure_stages(backbone, args.image, args.batch, arch, args.seed,
                                       tell_sizes=not args.withhold_sizes)
            told = rows[arch][0].told
        table = stage_table(rows)
        text = (f'Largest relative difference in the image\'s region, stages 1-{len(rows[arch][0].diffs)} '
                f'(random weights, seed {args.seed}; sizes told by {told}); {machine_line()}\n\n{table}')
        return with_copy(text, args.out)

    return run_tool(work, (ValueError, KeyError, TypeError))


if __name__ == '__main__':
    raise SystemExit(main())
