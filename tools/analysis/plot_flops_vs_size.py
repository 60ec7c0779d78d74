"""Backbone GFLOPs vs input size for PVT-Tiny, PVT-Small, ResNet-50 and ViT-Small/16
(the paper's Figure 6), counted with mmengine plus the attention matmuls.

Convention: 1 multiply-add = 1 FLOP; square inputs; attention matmuls of SDPA included
(see :mod:`pvt_mm.flops`). ViT-Small/16 is mmpretrain's ``VisionTransformer(arch='deit-small')``
(its position embedding is resized to every input).

Example::

    python tools/analysis/plot_flops_vs_size.py --out docs/figures/flops_vs_size.png
"""
import argparse
import json
import os
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from pvt_mm.flops import count_complexity


def backbones() -> Dict[str, Callable[[], nn.Module]]:
    """Builders of the compared backbones (random weights: FLOPs do not depend on them)."""
    from mmdet.models.backbones import ResNet
    from mmpretrain.models.backbones import VisionTransformer

    from pvt_mm import PVT
    return {
        'PVT-Tiny': lambda: PVT(arch='tiny'),
        'PVT-Small': lambda: PVT(arch='small'),
        'ResNet-50': lambda: ResNet(depth=50),
        'ViT-Small/16': lambda: VisionTransformer(arch='deit-small', img_size=224, patch_size=16),
    }


def flops_table(sizes: List[int]) -> Dict[str, List[float]]:
    """GFLOPs (with attention) of every backbone at every square ``size``."""
    table = {}
    for name, build in backbones().items():
        model = build()
        model.eval()
        with torch.no_grad():
            table[name] = [count_complexity(model, (torch.randn(1, 3, s, s),))['']['flops_with_attention']
                           / 1e9
                           for s in sizes]
        print(name, ' '.join(f'{s}:{g:.1f}' for s, g in zip(sizes, table[name])), flush=True)
    return table


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', nargs='+', type=int,
                        default=[224, 320, 448, 512, 640, 800])
    parser.add_argument('--out', default='docs/figures/flops_vs_size.png')
    parser.add_argument('--json', help='also write the numbers here')
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    table = flops_table(args.sizes)

    import matplotlib
    matplotlib.use('Agg')  # headless
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=110)
    for name, values in table.items():
        ax.plot(args.sizes, values, marker='o', markersize=3, label=name)
    ax.set_xlabel('input size (square, pixels)')
    ax.set_ylabel('backbone GFLOPs (1 multiply-add = 1 FLOP)')
    ax.set_title('Backbone complexity vs input size')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out)
    print(f'Saved {args.out}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(sizes=args.sizes, gflops=table), f, indent=2)


if __name__ == '__main__':
    main()
