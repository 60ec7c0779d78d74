"""FLOP counting for PVT models with mmengine's analysis tools, attention included.

mmengine's counter (``mmengine.analysis``, fvcore's jit tracer) counts one fused
multiply-add as one FLOP and knows ``aten::linear`` / ``aten::matmul`` / convolutions, but
has no handle for ``aten::scaled_dot_product_attention``: it lists SDPA among the
"unsupported operators" and counts it as **zero**, so the two attention products of every
spatial-reduction attention layer are missed. :func:`sdpa_flop_jit` counts them the way the
counter counts an explicit ``q @ k.transpose(-2, -1)`` and ``attn @ v``:
``B * heads * N_q * N_kv * (d_qk + d_v)`` (softmax, scaling and dropout are not counted,
like every other elementwise op).
"""
from typing import Any, List, Optional, Tuple

import torch
from torch import nn

SDPA_OP = 'aten::scaled_dot_product_attention'


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """mmengine/fvcore op handle for SDPA: the FLOPs of ``q k^T`` plus ``attn v``."""
    from mmengine.analysis.jit_handles import get_shape
    q_shape, k_shape, v_shape = (get_shape(v) for v in inputs[:3])
    *batch, n_q, d_qk = q_shape
    n_kv, d_v = k_shape[-2], v_shape[-1]
    batch_size = 1
    for dim in batch:
        batch_size *= dim
    return batch_size * n_q * n_kv * (d_qk + d_v)


def count_flops(model: nn.Module, inputs: Tuple[torch.Tensor, ...],
                with_attention: bool = True) -> Tuple[int, dict]:
    """Count ``model``'s forward FLOPs on ``inputs`` with mmengine's ``FlopAnalyzer``.

    Args:
        model: The model (put it in eval mode first); called as ``model(*inputs)``.
        inputs: Positional inputs of the forward.
        with_attention: Count ``F.scaled_dot_product_attention`` (mmengine alone does not).

    Returns:
        Total FLOPs and the per-operator breakdown.
    """
    from mmengine.analysis import FlopAnalyzer
    analyzer = FlopAnalyzer(model, inputs)
    if with_attention:
        analyzer.set_op_handle(SDPA_OP, sdpa_flop_jit)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with torch.no_grad():
        return analyzer.total(), dict(analyzer.by_operator())


def segmentor_flops(model: nn.Module, shape: Tuple[int, int] = (512, 512),
                    with_attention: bool = True) -> int:
    """FLOPs of an mmseg segmentor's whole-image forward (backbone, neck, decode head) on one
    ``3 x H x W`` image, as mmseg's ``tools/analysis_tools/get_flops.py`` measures it."""
    from mmengine.model import revert_sync_batchnorm
    model = revert_sync_batchnorm(model).eval()
    image = torch.rand(1, 3, *shape)
    return count_flops(model, (image, ), with_attention)[0]


def classifier_flops(model: nn.Module, shape: Tuple[int, int] = (224, 224),
                     with_attention: bool = True) -> int:
    """FLOPs of an mmpretrain classifier's forward (``mode='tensor'``) on one image."""
    model = model.eval()
    image = torch.rand(1, 3, *shape)
    return count_flops(model, (image, ), with_attention)[0]


__all__ = ['sdpa_flop_jit', 'count_flops', 'segmentor_flops', 'classifier_flops', 'SDPA_OP']
