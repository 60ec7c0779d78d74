"""What batch invariance costs on this machine: the padding-aware model against the plain one.

For each preset (``--archs``) the backbone with ``batch_invariant=True`` and with ``False``
(same weights) at batch 1 with nothing padded (issue 27's budget: at most 5 %) and on a
mixed-size padded batch; then a detector config's whole ``test_step`` with the batch
invariance hooks (backbone, neck and head masks) against the same model without them;
``--train`` times each case as a training step too. Each
pair is timed interleaved (round-robin, order rotated every round); the table gives the
medians and their ratio. The measuring lives in :mod:`pvt_mm.batch_invariance_cost`.

Example (the figures of docs/batch_invariance.md)::

    python tools/analysis/benchmark_batch_invariance.py --archs small b2 --shape 512x512 \
        --mixed 512x512 448x512 512x384 384x448 --repeat 10 --train
"""
import argparse
from typing import List, Optional

import torch

from pvt_mm.batch_invariance_cost import backbone_cost, cost_table, detector_cost
from pvt_mm.cli import hw_size, run_tool, with_copy
from pvt_mm.models.backbones.archs import names
from pvt_mm.timing import machine_line

MAIN_JOB = 'configs/retinanet/pvtv2_b0_fpn_shapes.py'


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--archs', nargs='+', default=['small', 'b2'], choices=list(names()),
                        metavar='ARCH', help='presets (default: small b2)')
    parser.add_argument('--shape', type=hw_size, default=(512, 512),
                        help='the batch-1 image, HxW (default 512x512)')
    parser.add_argument('--mixed', type=hw_size, nargs='+',
                        default=[(512, 512), (448, 512), (512, 384), (384, 448)],
                        help='the sizes of the mixed batch, HxW each')
    parser.add_argument('--config', default=MAIN_JOB,
                        help=f'detector config for the whole-model case (default: the main job, '
                        f'{MAIN_JOB}); "none" skips it')
    parser.add_argument('--det-shape', type=hw_size, default=(256, 320),
                        help='the detector\'s batch-1 image, HxW (default 256x320)')
    parser.add_argument('--det-mixed', type=hw_size, nargs='+',
                        default=[(256, 320), (192, 256), (224, 288), (160, 320)],
                        help='the detector\'s mixed batch, HxW each')
    parser.add_argument('--train', action='store_true',
                        help='also time each case as a training step (forward + backward)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed rounds first')
    parser.add_argument('--repeat', type=int, default=10, help='timed rounds')
    parser.add_argument('--threads', type=int, help='torch threads (default: torch\'s)')
    parser.add_argument('--out', help='also write the table (markdown) to this file')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def work() -> str:
        rows = []
        for arch in args.archs:
            rows += backbone_cost(arch, args.shape, args.mixed, args.warmup, args.repeat,
                                  train=args.train)
        if args.config.lower() != 'none':
            rows += detector_cost(args.config, args.det_shape, args.det_mixed, args.warmup,
                                  args.repeat, train=args.train)
        text = (f'Batch invariance cost, median of {args.repeat} interleaved calls after '
                f'{args.warmup} warm-up; {machine_line()}\n\n{cost_table(rows)}')
        return with_copy(text, args.out)

    return run_tool(work, (ValueError, KeyError, FileNotFoundError, AssertionError))


if __name__ == '__main__':
    raise SystemExit(main())
