"""FLOPs and parameters of any OpenMMLab config (mmdet, mmseg, mmpretrain) at a given size.

Convention: like mmengine (and the PVT / ResNet papers' "GFLOPs"), one multiply-add counts
as ONE FLOP. mmengine's ``get_model_complexity_info`` traces the model in ``'tensor'`` mode
and counts convolutions, linear layers, (b)mm / matmul / einsum, norms and upsampling, but
has no handle for ``aten::scaled_dot_product_attention``: the attention matmuls
(``Q K^T`` and ``A V``) of every model that uses SDPA (pvt_mm's PVT, mmpretrain's ViT) are
silently skipped. This tool prints both numbers: mmengine's as is, and the total with a
handle that adds ``B * heads * Nq * Nk * (d_qk + d_v)`` multiply-adds per SDPA call. The
counting lives in :mod:`pvt_mm.flops`; this file is its command line.

Example::

    python tools/analysis/get_flops.py configs/retinanet/pvt_small_fpn_1x_coco.py --shape 800 1333
"""
import argparse
from typing import Any, Dict, List, Optional

from pvt_mm.flops import analyse_config


def _g(value: float) -> str:
    return f'{value / 1e9:.2f}'


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description='FLOPs and params of a config.')
    parser.add_argument('config')
    parser.add_argument('--shape', nargs='+', type=int, default=[224, 224],
                        help='input H W (one value: square)')
    parser.add_argument('--batch', type=int, default=1)
    return parser


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    shape = tuple(args.shape * 2 if len(args.shape) == 1 else args.shape[:2])
    res = analyse_config(args.config, shape, args.batch)
    print(f'Config: {args.config}')
    print(f'Input: {args.batch}x3x{shape[0]}x{shape[1]} (scope {res["scope"]})')
    print('Convention: 1 multiply-add = 1 FLOP (mmengine, as in the PVT and ResNet papers).')
    print('| part | GFLOPs mmengine (no SDPA) | attention matmuls GFLOPs | GFLOPs incl. attention '
          '| params (M) |')
    print('|---|---|---|---|---|')
    for part in ('model', 'backbone'):
        if part in res:
            r = res[part]
            print(f'| {part} | {_g(r["flops_mmengine"])} | {r["attention"] / 1e9:.4g} | '
                  f'{_g(r["flops_with_attention"])} | {r["params"] / 1e6:.2f} |')
    return res


if __name__ == '__main__':
    main()
