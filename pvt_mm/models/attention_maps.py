"""Attention maps of PVT's spatial-reduction attention, for pictures and inspection.

The model runs fused scaled-dot-product attention and never materialises the attention
matrix. :func:`sra_attention` computes it explicitly from the attention module's own
``q`` / ``kv`` projections and its own reduction
(:meth:`pvt_mm.models.layers.SpatialReductionAttention.reduce_keys`: ``sr`` conv and
``norm``), and :func:`pyramid` captures each stage's real inputs and outputs with hooks
while the backbone runs its own forward, so neither can drift from the model.
"""
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .layers import HW, SpatialReductionAttention, TokenRegion


def sra_attention(attn: SpatialReductionAttention, x: Tensor, hw: HW,
                  num_prefix_tokens: int = 0,
                  region: Optional[TokenRegion] = None) -> Tuple[Tensor, Tensor, HW]:
    """Spatial-reduction attention weights of one layer, computed explicitly.

    ``attn.proj((weights @ v).transpose(1, 2).reshape(B, N, C))`` equals ``attn(x, hw)``.

    Args:
        attn: The layer's attention module (``layer.attn``).
        x: Its input tokens ``(B, N, C)`` (already through the layer's ``norm1``).
        hw: The stage's grid.
        num_prefix_tokens: Class-token slots in front of the spatial tokens.
        region: Where each image of a padded batch is valid (the layer's own argument):
            keys in the padding get no weight, as in the layer.

    Returns:
        ``(weights, v, reduced_hw)``: softmax weights ``(B, heads, N, M)``, values
        ``(B, heads, M, C / heads)`` and the key grid (``(h // R, w // R)``, or 7x7 for
        linear SRA).
    """
    b, n, c = x.shape
    heads = attn.num_heads
    head_dims = c // heads
    q = attn.q(x).reshape(b, n, heads, head_dims).transpose(1, 2)
    kv = attn.kv(attn.reduce_keys(x, hw, num_prefix_tokens, region))
    k, v = kv.reshape(b, -1, 2, heads, head_dims).permute(2, 0, 3, 1, 4).unbind(0)
    reduced_hw = attn.reduced_hw(hw)
    scores = q @ k.transpose(-2, -1) * head_dims ** -0.5
    if region is not None and not attn.linear:
        scores = scores.masked_fill(~region.key_mask(attn.sr_ratio), float('-inf'))
    weights = scores.softmax(dim=-1)
    return weights, v, reduced_hw


def _chosen_layers(backbone: nn.Module, layer: int) -> List[int]:
    chosen = []
    for index, stage in enumerate(backbone.stages):
        depth = len(stage.layers)
        j = layer if layer >= 0 else depth + layer
        if not 0 <= j < depth:
            raise ValueError(f'layer {layer} is out of range for stage {index + 1} ({depth} '
                             'layers); give an index in [-depth, depth - 1].')
        chosen.append(j)
    return chosen


@torch.no_grad()
def pyramid(backbone: nn.Module, img: Tensor, query_xy: Optional[Tuple[float, float]] = None,
            layer: int = -1) -> List[Dict[str, Any]]:
    """Run ``backbone`` (a pvt_mm ``PVT``) on ``img`` and collect, per stage, the NCHW
    feature map and, if ``query_xy`` is given, the attention map of that query pixel in
    encoder layer ``layer`` of every stage (averaged over heads).

    Args:
        backbone: The PVT, in eval mode.
        img: A ``(1, 3, H, W)`` normalised image.
        query_xy: Query pixel ``(x, y)`` in ``img``'s coordinates, or ``None``.
        layer: Encoder layer of each stage (negative counts from the end).

    Returns:
        One dict per stage: ``feature`` (C, h, w), ``stride``, ``sr_ratio``, ``heads``,
        ``layer`` and, with a query, ``attention`` (h // R, w // R, sums to 1) and
        ``query_cell`` (row, col); arrays are numpy.

    Raises:
        ValueError: ``layer`` is out of range for a stage.
    """
    chosen = _chosen_layers(backbone, layer)
    captured: Dict[Tuple[str, int], Any] = {}
    handles = []
    for index, stage in enumerate(backbone.stages):
        handles.append(stage.register_forward_hook(
            lambda module, args, out, i=index: captured.__setitem__(('stage', i), out)))
        if query_xy is not None:
            handles.append(stage.layers[chosen[index]].attn.register_forward_pre_hook(
                lambda module, args, kwargs, i=index: captured.__setitem__(('attn', i),
                                                                           (args, kwargs)),
                with_kwargs=True))
    try:
        backbone(img)
    finally:
        for handle in handles:
            handle.remove()

    results = []
    for index, stage in enumerate(backbone.stages):
        attn = stage.layers[chosen[index]].attn
        tokens, hw = captured[('stage', index)]
        prefix = stage.num_prefix_tokens
        info: Dict[str, Any] = dict(stride=backbone.strides[index], sr_ratio=attn.sr_ratio,
                                    heads=attn.num_heads, layer=chosen[index])
        if query_xy is not None:
            args, kwargs = captured[('attn', index)]
            weights, _, reduced_hw = sra_attention(attn, *args, **kwargs)
            stride = img.shape[2] / hw[0], img.shape[3] / hw[1]
            row = min(int(query_xy[1] // stride[0]), hw[0] - 1)
            col = min(int(query_xy[0] // stride[1]), hw[1] - 1)
            row_weights = weights[0, :, prefix + row * hw[1] + col, prefix:].mean(0)
            info['attention'] = row_weights.reshape(reduced_hw).numpy()
            info['query_cell'] = (row, col)
        spatial = tokens[:, prefix:]
        info['feature'] = spatial.reshape(spatial.shape[0], hw[0], hw[1], -1)[0].permute(
            2, 0, 1).numpy()
        results.append(info)
    return results


__all__ = ['sra_attention', 'pyramid']
