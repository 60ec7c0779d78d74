"""FLOP counting with mmengine's analysis tools, attention included: the one place FLOPs are
counted (``tools/analysis/get_flops.py``, ``plot_flops_vs_size.py`` and the tests use it).

Convention: like mmengine (and the PVT / ResNet papers' "GFLOPs"), one multiply-add counts
as ONE FLOP. mmengine's counter (``mmengine.analysis``, fvcore's jit tracer) knows
``aten::linear`` / ``aten::matmul`` / convolutions, norms and upsampling, but has no handle
for ``aten::scaled_dot_product_attention``: it lists SDPA among the "unsupported
operators" and counts it as **zero**, so the two attention products of every
spatial-reduction attention layer (and of mmpretrain's ViT) are missed.
:func:`sdpa_flop_jit` counts them the way the counter counts an explicit
``q @ k.transpose(-2, -1)`` and ``attn @ v``: ``B * heads * N_q * N_kv * (d_qk + d_v)``
(softmax, scaling and dropout are not counted, like every other elementwise op).
"""
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .config import build_from_config

SDPA_OP = 'aten::scaled_dot_product_attention'


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """mmengine/fvcore op handle for SDPA: the FLOPs of ``q k^T`` plus ``attn v``.

    Args:
        inputs: The traced op's inputs (q, k, v, ...).
        outputs: The traced op's outputs (unused).
    """
    from mmengine.analysis.jit_handles import get_shape
    q_shape, k_shape, v_shape = (get_shape(v) for v in inputs[:3])
    *batch, n_q, d_qk = q_shape
    n_kv, d_v = k_shape[-2], v_shape[-1]
    batch_size = 1
    for dim in batch:
        batch_size *= dim
    return batch_size * n_q * n_kv * (d_qk + d_v)


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Multiply-adds of ``baddbmm(input, A, B)`` (``torch.nn.MultiheadAttention``'s
    ``Q K^T`` on the weights-returning path): ``b * n * m * p``.

    Args:
        inputs: The traced op's inputs (input, A, B, ...).
        outputs: The traced op's outputs (unused).
    """
    from mmengine.analysis.jit_handles import get_shape
    a, b = get_shape(inputs[1]), get_shape(inputs[2])
    return a[0] * a[1] * a[2] * b[2]


# Ops mmengine 0.10 leaves uncounted that are matmuls of attention.
ATTENTION_HANDLES = {
    SDPA_OP: sdpa_flop_jit,
    'aten::baddbmm': baddbmm_flop_jit,
}


def _analyzer(model: nn.Module, inputs: tuple, with_attention: bool = True):
    from mmengine.analysis import FlopAnalyzer
    analyzer = FlopAnalyzer(model, inputs)
    if with_attention:
        for name, handle in ATTENTION_HANDLES.items():
            analyzer.set_op_handle(name, handle)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analyzer


def count_flops(model: nn.Module, inputs: Tuple[torch.Tensor, ...],
                with_attention: bool = True) -> Tuple[int, dict]:
    """Count ``model``'s forward FLOPs on ``inputs`` with mmengine's ``FlopAnalyzer``.

    Args:
        model: The model (put it in eval mode first); called as ``model(*inputs)``.
        inputs: Positional inputs of the forward.
        with_attention: Count attention matmuls (SDPA) that mmengine alone does not.

    Returns:
        Total FLOPs and the per-operator breakdown.
    """
    analyzer = _analyzer(model, inputs, with_attention)
    with torch.no_grad():
        return analyzer.total(), dict(analyzer.by_operator())


def count_complexity(model: nn.Module, inputs: tuple,
                     parts: Sequence[str] = ('',)) -> Dict[str, Dict[str, float]]:
    """FLOPs as mmengine counts them, and with the attention handles added, plus params.

    Args:
        model: The module to trace.
        inputs: Positional inputs of ``model``.
        parts: Submodule names to report (``''`` is the whole model, e.g. ``'backbone'``).

    Returns:
        Per part: ``flops_mmengine``, ``attention`` (the added matmuls),
        ``flops_with_attention`` and ``params``.

    Raises:
        RuntimeError: the count without the handles is not mmengine's own total.
    """
    from mmengine.analysis import get_model_complexity_info, parameter_count
    info = get_model_complexity_info(model, inputs=inputs, show_table=False, show_arch=False)
    by_module = _analyzer(model, inputs).by_module_and_operator()
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


def classifier_flops(model: nn.Module, shape: Tuple[int, int] = (224, 224),
                     with_attention: bool = True) -> int:
    """FLOPs of an mmpretrain classifier's forward (``mode='tensor'``) on one image.

    Args:
        model: The classifier.
        shape: Input ``(H, W)``.
        with_attention: Count the attention matmuls.
    """
    model = model.eval()
    image = torch.rand(1, 3, *shape)
    return count_flops(model, (image, ), with_attention)[0]


def data_samples_for(scope: str, batch: int, shape: Tuple[int, int]) -> Optional[list]:
    """Minimal data samples carrying the image metadata heads read in 'tensor' mode.

    Args:
        scope: ``'mmdet'``, ``'mmseg'`` or ``'mmpretrain'`` (which needs none: ``None``).
        batch: Number of samples.
        shape: Image ``(H, W)``.
    """
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


def tensor_mode(model: nn.Module, scope: str, batch: int, shape: Tuple[int, int]) -> nn.Module:
    """Bind data samples and ``mode='tensor'`` to ``model.forward`` (detectors and
    segmentors take them as extra arguments; a plain backbone is left alone).

    Args:
        model: The model whose forward is bound.
        scope: Its default scope (see :func:`data_samples_for`).
        batch: Batch size of the traced input.
        shape: Input ``(H, W)``.
    """
    if hasattr(model, 'data_preprocessor') and 'mode' in model.forward.__code__.co_varnames:
        model.forward = partial(model.forward, data_samples=data_samples_for(scope, batch, shape),
                                mode='tensor')
    return model


def analyse_config(config: str, shape: Tuple[int, int], batch: int = 1,
                   cfg_options: Optional[dict] = None) -> Dict[str, Any]:
    """Whole-model and backbone complexity of ``config`` for a ``batch x 3 x H x W`` input.

    Args:
        config: Any mmdet / mmseg / mmpretrain config file.
        shape: Input ``(H, W)``.
        batch: Batch size.
        cfg_options: Overrides merged into the config.

    Returns:
        ``config``, ``shape``, ``scope``, ``model`` and (if there is one) ``backbone``, the
        latter two as :func:`count_complexity` reports them.
    """
    model, cfg = build_from_config(config, cfg_options, with_weights=False)
    scope = cfg.get('default_scope', 'mmdet')
    x = torch.randn(batch, 3, *shape)
    result: Dict[str, Any] = dict(config=config, shape=list(shape), scope=scope)
    parts = ('', 'backbone') if hasattr(model, 'backbone') else ('',)
    with torch.no_grad():
        counts = count_complexity(tensor_mode(model, scope, batch, shape), (x,), parts)
    result['model'] = counts['']
    if 'backbone' in counts:
        result['backbone'] = counts['backbone']
    return result


__all__ = ['SDPA_OP', 'ATTENTION_HANDLES', 'sdpa_flop_jit', 'baddbmm_flop_jit', 'count_flops',
           'count_complexity', 'classifier_flops', 'data_samples_for', 'tensor_mode',
           'analyse_config']
