"""FLOPs and parameters of any OpenMMLab config (mmdet, mmseg, mmpretrain) at a given size.

Convention: like mmengine (and the PVT / ResNet papers' "GFLOPs"), one multiply-add counts
as ONE FLOP. mmengine's ``get_model_complexity_info`` traces the model in ``'tensor'`` mode
and counts convolutions, linear layers, (b)mm / matmul / einsum, norms and upsampling, but
has no handle for ``aten::scaled_dot_product_attention``: the attention matmuls
(``Q K^T`` and ``A V``) of every model that uses SDPA (pvt_mm's PVT, mmpretrain's ViT) are
silently skipped. This tool prints both numbers: mmengine's as is, and the total with a
handle that adds ``B * heads * Nq * Nk * (d_qk + d_v)`` multiply-adds per SDPA call.

Example::

    python tools/analysis/get_flops.py configs/retinanet/pvt_small_fpn_1x_coco.py --shape 800 1333
"""
import argparse
import os
import sys
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO)
from pvt_mm.flops import SDPA_OP, sdpa_flop_jit  # noqa: E402  (one SDPA counting rule)


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Multiply-adds of ``baddbmm(input, A, B)`` (``torch.nn.MultiheadAttention``'s
    ``Q K^T`` on the weights-returning path): ``b * n * m * p``."""
    from mmengine.analysis.jit_handles import get_shape
    a, b = get_shape(inputs[1]), get_shape(inputs[2])
    return a[0] * a[1] * a[2] * b[2]


# Ops mmengine 0.10 leaves uncounted that are matmuls of attention.
ATTENTION_HANDLES = {
    SDPA_OP: sdpa_flop_jit,
    'aten::baddbmm': baddbmm_flop_jit,
}


def build_from_config(config: str, cfg_options: Optional[dict] = None) -> Tuple[nn.Module, Any]:
    """Build a config's model through its own registry (after ``init_default_scope``)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    model_cfg = cfg.model
    # Complexity does not depend on the weights: never read checkpoints.
    if model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone.init_cfg = None
    model = MODELS.build(model_cfg)
    model.eval()
    return model, cfg


def data_samples_for(scope: str, batch: int, shape: Tuple[int, int]) -> Optional[list]:
    """Minimal data samples carrying the image metadata heads read in 'tensor' mode."""
    h, w = shape
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1.0, 1.0))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        return [DetDataSample(metainfo=meta) for _ in range(batch)]
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample
        return [SegDataSample(metainfo=meta) for _ in range(batch)]
    return None  # mmpretrain classifiers need no samples in 'tensor' mode


def count(model: nn.Module, inputs: tuple, parts: Sequence[str] = ('',)) -> Dict[str, Dict[str, float]]:
    """FLOPs as mmengine counts them, and with the attention handles added, plus params.

    Args:
        model: The module to trace.
        inputs: Positional inputs of ``model``.
        parts: Submodule names to report (``''`` is the whole model, e.g. ``'backbone'``).

    Returns:
        Per part: ``flops_mmengine``, ``attention`` (the added matmuls),
        ``flops_with_attention`` and ``params``.
    """
    from mmengine.analysis import FlopAnalyzer, get_model_complexity_info, parameter_count
    info = get_model_complexity_info(model, inputs=inputs, show_table=False, show_arch=False)
    analyzer = FlopAnalyzer(model, inputs)
    for name, handle in ATTENTION_HANDLES.items():
        analyzer.set_op_handle(name, handle)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_module = analyzer.by_module_and_operator()
    params = parameter_count(model)
    attention_ops = {n for name in ATTENTION_HANDLES for n in (name, name.split('::')[-1])}
    results = {}
    for part in parts:
        ops = by_module[part]
        attention = sum(v for k, v in ops.items() if k in attention_ops)
        total = sum(ops.values())
        results[part] = dict(flops_mmengine=float(total - attention), attention=float(attention),
                             flops_with_attention=float(total), params=float(params[part]))
    if results.get('', {}).get('flops_mmengine', info['flops']) != info['flops']:
        raise RuntimeError(f'FLOPs without the attention handles ({results[""]["flops_mmengine"]}) '
                           f'differ from get_model_complexity_info ({info["flops"]})')
    return results


def tensor_mode(model: nn.Module, scope: str, batch: int, shape: Tuple[int, int]) -> nn.Module:
    """Bind data samples and ``mode='tensor'`` to ``model.forward`` (detectors and
    segmentors take them as extra arguments; a plain backbone is left alone)."""
    if hasattr(model, 'data_preprocessor') and 'mode' in model.forward.__code__.co_varnames:
        model.forward = partial(model.forward, data_samples=data_samples_for(scope, batch, shape),
                                mode='tensor')
    return model


def analyse(config: str, shape: Tuple[int, int], batch: int = 1,
            cfg_options: Optional[dict] = None) -> Dict[str, Any]:
    """Whole-model and backbone complexity of ``config`` for a ``batch x 3 x H x W`` input."""
    model, cfg = build_from_config(config, cfg_options)
    scope = cfg.get('default_scope', 'mmdet')
    x = torch.randn(batch, 3, *shape)
    result: Dict[str, Any] = dict(config=config, shape=list(shape), scope=scope)
    parts = ('', 'backbone') if hasattr(model, 'backbone') else ('',)
    with torch.no_grad():
        counts = count(tensor_mode(model, scope, batch, shape), (x,), parts)
    result['model'] = counts['']
    if 'backbone' in counts:
        result['backbone'] = counts['backbone']
    return result


def _g(value: float) -> str:
    return f'{value / 1e9:.2f}'


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description='FLOPs and params of a config.')
    parser.add_argument('config')
    parser.add_argument('--shape', nargs='+', type=int, default=[224, 224],
                        help='input H W (one value: square)')
    parser.add_argument('--batch', type=int, default=1)
    args = parser.parse_args(argv)
    shape = tuple(args.shape * 2 if len(args.shape) == 1 else args.shape[:2])
    res = analyse(args.config, shape, args.batch)
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
