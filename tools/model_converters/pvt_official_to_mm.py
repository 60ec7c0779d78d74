#!/usr/bin/env python
"""Convert an official PVT (v1 or v2) release checkpoint to pvt_mm's key format.

Usage:
    python tools/model_converters/pvt_official_to_mm.py pvt_small.pth pvt_small_mm.pth
    python tools/model_converters/pvt_official_to_mm.py pvt_v2_b2.pth pvt_v2_b2_mm.pth

Not required for training (``init_cfg=dict(type='Pretrained', checkpoint=...)`` converts on
the fly); useful to inspect or re-publish weights. Converting twice is harmless.
"""
import argparse
import sys

from pvt_mm.checkpoint import CheckpointError
from pvt_mm.models.backbones.pvt_convert import convert_checkpoint_file
from pvt_mm.cli import run_tool


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='official PVT v1 or v2 checkpoint (.pth, optionally under "model")')
    parser.add_argument('dst', help='where to write the pvt_mm checkpoint')
    parser.add_argument('--num-stages', type=int, default=4)
    return parser


def convert(args: argparse.Namespace) -> str:
    """Convert ``args.src`` to ``args.dst``; returns the line that reports it."""
    state = convert_checkpoint_file(args.src, args.dst, args.num_stages)
    return f'wrote {len(state)} tensors to {args.dst}'


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: convert(args), (FileNotFoundError, CheckpointError), status=1)


if __name__ == '__main__':
    sys.exit(main())
