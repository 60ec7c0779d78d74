"""Batch invariance outside the backbone: how the valid sizes reach a forward, and the neck
and head made padding-aware (issue 27).

mmdet / mmseg pad a batch to its largest image, and an FPN or a dense head reads that padding
at each image's edge (3x3 convs), and GroupNorm takes its statistics over the whole padded map.
This module makes them compute, inside each image's valid region (:mod:`.padding`), what a
batch of that image alone computes:

* :class:`BatchInvariance` puts PyTorch forward hooks (the public hook API; no mmdet / mmseg
  class is edited or patched) on a detector / segmentor:

  - on the model itself: a pre-hook reads each data sample's ``img_shape`` and the batch
    tensor's size and enters :func:`padded_batch` for the forward; a forward hook registered
    with ``always_call=True`` leaves it, also when the forward raises;
  - on the neck and the dense / decode heads: their input maps and the output of every leaf
    module that returns a map are zeroed outside each image's region at that map's stride,
    which is what a conv's zero padding reads in a batch of one; bilinear upsampling
    modules read an edge-replicated map instead (what a batch of one's border clamping
    reads); a sigmoid dense head's class logits outside the regions are set to
    :data:`OUTSIDE_LOGIT` (score 0: no detection comes from the padding, as none exists
    alone); a segmentation head's logits are edge-replicated before mmseg resizes them;
  - an RPN head's box deltas outside the regions push those anchors' boxes past the image,
    so that clipping to ``img_shape`` leaves them empty and the RPN's ``min_bbox_size``
    filter drops them (it has no score threshold: score-0 proposals would reach the RoI head);
  - a two-stage detector's RoI extractors (``roi_head``'s ``bbox_roi_extractor`` /
    ``mask_roi_extractor``, any ``BaseRoIExtractor``) read edge-replicated maps: RoIAlign
    clamps a sample past an image's last cell to that cell alone, and reads the cell beyond
    it in the padded batch.

* :class:`MaskedGN` is ``nn.GroupNorm`` with statistics over each image's valid region
  (``norm_cfg=dict(type='MaskedGN', num_groups=...)``); ``nn.GroupNorm`` itself when nothing
  is padded, so batch 1 is unchanged bit for bit and the checkpoints are the same.

:class:`pvt_mm.hooks.BatchInvariantHook` installs :class:`BatchInvariance` on the runner's
model (``custom_hooks=[dict(type='BatchInvariantHook')]``, set by pvt_mm's detection and
segmentation configs); without a runner, call :func:`enable_batch_invariance`.

An exported graph calls the model's parts itself, so it wraps them in :func:`masked_maps`
(the same hooks, for that forward) with the sizes as a ``(B, 2)`` tensor: every mask is then
computed by tensor ops from the symbolic map sizes, and :class:`MaskedGN` by masked sums
(:func:`masked_group_norm`), so the file keeps a dynamic batch and size.
"""
import contextlib
import math
import warnings
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .padding import (HW, SIZE_DIVISOR, batch_input_size, batch_valid_sizes, cells_mask,
                      current_batch_input_size, current_valid_sizes, is_padded, map_stride,
                      region_cells, traced_region_cells, valid_sizes)

#: The class logit a sigmoid dense head gets outside every image's region: sigmoid gives
#: exactly 0 in fp32 and fp16 stays finite, so those anchors never pass a score threshold.
OUTSIDE_LOGIT = -1e4
#: An RPN head's box deltas (dx, dy) outside the regions: each such anchor's box is moved
#: 1e4 of its own sizes right and down, past any image, so clipping to ``img_shape`` leaves it
#: empty (checked at install by decoding one, :func:`_rpn_drops_padding`).
OUTSIDE_DELTA = 1e4
#: The model attributes masked by default: mmdet's neck and dense heads, mmseg's heads (a
#: head only when it works on maps, see :func:`_works_on_maps`), and a two-stage detector's
#: ``roi_head``, whose RoI extractors read edge-replicated maps (its heads work per RoI).
DEFAULT_MASK_MODULES = ('neck', 'bbox_head', 'rpn_head', 'roi_head', 'decode_head',
                        'auxiliary_head')
_BILINEAR_MODES = ('bilinear', 'bicubic')


@contextlib.contextmanager
def padded_batch(sizes: Union[Sequence[HW], Tensor, None], batch_hw: Optional[Sequence[int]]
                 ) -> Iterator[None]:
    """Make ``sizes`` (per image; or a ``(B, 2)`` tensor, :func:`.padding.padded_valid_sizes`,
    in a traced graph) and ``batch_hw`` (the padded batch) current for a forward."""
    with batch_valid_sizes(sizes), batch_input_size(batch_hw):
        yield


def preprocessor_divisor(model: nn.Module) -> Optional[int]:
    """What the model's data preprocessor pads a batch of one to a multiple of, now.

    mmdet's ``pad_size_divisor``. mmseg's ``size_divisor``, or in eval mode its
    ``test_cfg``'s; ``None`` when it pads to a fixed ``size`` instead (mmseg's training
    crop): a batch of one is then padded to the batch's size, so no image has a smaller
    valid region. :data:`SIZE_DIVISOR` when the model has no such preprocessor.
    """
    preprocessor = getattr(model, 'data_preprocessor', None)
    if preprocessor is None:
        return SIZE_DIVISOR
    if hasattr(preprocessor, 'pad_size_divisor'):  # mmdet
        return max(1, int(preprocessor.pad_size_divisor))
    settings = dict(size=getattr(preprocessor, 'size', None),
                    size_divisor=getattr(preprocessor, 'size_divisor', None))
    if not model.training:  # mmseg pads in eval mode only as its test_cfg says
        settings = dict(getattr(preprocessor, 'test_cfg', None) or {})
    if settings.get('size') is not None:
        return None
    return max(1, int(settings.get('size_divisor') or 1))


def sizes_from_data_samples(data_samples: Any, batch_hw: Sequence[int],
                            divisor: Optional[int] = SIZE_DIVISOR) -> Optional[Tuple[HW, ...]]:
    """Each image's valid size from mmdet / mmseg data samples' ``img_shape`` metainfo.

    ``img_shape`` is the image's size before the data preprocessor padded it (both libraries
    set it; mmseg's preprocessor rewrites it as a ``torch.Size``). ``None`` (no masking) when
    there are no data samples or one lacks ``img_shape``, or ``divisor`` is ``None`` (see
    :func:`preprocessor_divisor`).
    """
    if divisor is None:
        return None
    if not isinstance(data_samples, (list, tuple)) or not data_samples:
        return None
    shapes = []
    for sample in data_samples:
        metainfo = getattr(sample, 'metainfo', sample if isinstance(sample, dict) else {})
        shape = metainfo.get('img_shape')
        if shape is None:
            return None
        shapes.append(tuple(int(s) for s in tuple(shape)[:2]))
    return valid_sizes(shapes, batch_hw, divisor)


def _padding_now(x: Tensor) -> Optional[Tuple[Union[Tuple[HW, ...], Tensor], Sequence]]:
    """``(sizes, batch_hw)`` when ``x`` is a batch map and the batch in flight is padded.

    Tensor sizes (an exported graph's, set by :func:`padded_batch`) always count as padded:
    telling whether they pad would read them back to the host (and freeze them in a graph).
    """
    sizes, batch_hw = current_valid_sizes(), current_batch_input_size()
    if x.dim() != 4 or batch_hw is None or sizes is None:
        return None
    if isinstance(sizes, Tensor):
        return sizes, batch_hw
    if not is_padded(sizes, batch_hw):
        return None
    if len(sizes) != x.shape[0]:
        raise ValueError(
            f'{len(sizes)} valid sizes are set for a batch of {x.shape[0]} maps; set one '
            '(h, w) per image (pvt_mm.models.batch_invariance.padded_batch).')
    return sizes, batch_hw


def _cells(x: Tensor, sizes: Union[Sequence[HW], Tensor], batch_hw: Sequence) -> Tensor:
    """``(B, 2)`` long: each image's valid rows and columns on the map ``x``."""
    if isinstance(sizes, Tensor):  # traced: the stride found by tensor ops
        return traced_region_cells(sizes, x.shape[-2:], batch_hw)
    return region_cells(sizes, map_stride(x.shape[-2:], batch_hw), device=x.device)


def _region(x: Tensor, sizes: Union[Sequence[HW], Tensor], batch_hw: Sequence) -> Tensor:
    """``(B, 1, h, w)`` bool: True inside each image's valid region on the map ``x``."""
    return cells_mask(_cells(x, sizes, batch_hw), x.shape[-2:])


def zero_outside(x: Tensor) -> Tensor:
    """``x`` with every cell outside its image's valid region set to 0 (``x`` itself when
    nothing is padded)."""
    return fill_outside(x, 0.0)


def fill_outside(x: Tensor, value: float) -> Tensor:
    """``x`` with every cell outside its image's valid region set to ``value``."""
    padding = _padding_now(x)
    if padding is None:
        return x
    # A selection, not a product: whatever the padding holds (inf / NaN included) goes;
    # torch.where rather than masked_fill, which clones first (one pass each way, not two).
    return torch.where(_region(x, *padding), x, value)


def replicate_outside(x: Tensor) -> Tensor:
    """``x`` with each image's last valid row / column repeated over its padding.

    Bilinear resizing reads one cell past the region at its edge; alone, the image's map ends
    there and the resize clamps to the last cell, which is what the replicated map holds.
    """
    padding = _padding_now(x)
    if padding is None:
        return x
    b, c, h, w = x.shape
    last = _cells(x, *padding) - 1  # (B, 2)
    # Gathers with per-image clamped indices: one op for the batch, traceable.
    rows = torch.minimum(torch.arange(h, device=x.device)[None], last[:, 0:1])  # (B, h)
    x = x.gather(2, rows[:, None, :, None].expand(b, c, h, w))
    cols = torch.minimum(torch.arange(w, device=x.device)[None], last[:, 1:2])  # (B, w)
    return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def masked_group_norm(x: Tensor, region: Tensor, num_groups: int, weight: Optional[Tensor],
                      bias: Optional[Tensor], eps: float) -> Tensor:
    """``F.group_norm`` of each image's ``region`` ``(B, 1, h, w)`` only, padding set to 0.

    Statistics from masked sums over the whole batch (no per-image loop, so a traced graph
    keeps a dynamic batch); the variance in two passes, as ``F.group_norm`` does, to stay
    within 1e-5 relative of it.
    """
    b, c, h, w = x.shape
    mask = region.to(x.dtype)[:, None]  # (B, 1, 1, h, w)
    groups = x.reshape(b, num_groups, c // num_groups, h, w)
    count = mask.sum((2, 3, 4), keepdim=True) * (c // num_groups)
    mean = (groups * mask).sum((2, 3, 4), keepdim=True) / count
    var = (((groups - mean) * mask) ** 2).sum((2, 3, 4), keepdim=True) / count
    y = ((groups - mean) * torch.rsqrt(var + eps)).reshape(b, c, h, w)
    if weight is not None:
        y = y * weight[None, :, None, None] + bias[None, :, None, None]
    return torch.where(region, y, 0.0)


class MaskedGN(nn.GroupNorm):
    """``nn.GroupNorm`` whose statistics cover each image's valid region only.

    In a padded batch (:func:`padded_batch` set, some image smaller than the batch) each image's
    region is normalised on its own, exactly as ``F.group_norm`` normalises that image's map in
    a batch of one, and the padding is set to 0; otherwise this is ``nn.GroupNorm``, bit for
    bit. The parameters are ``nn.GroupNorm``'s (``weight``, ``bias``), so checkpoints load
    either way.

    The arguments are in mmcv's ``build_norm_layer`` order (``num_channels`` first), so
    ``norm_cfg=dict(type='MaskedGN', num_groups=32)`` works where ``type='GN'`` does.

    Cost: one ``group_norm`` call per image instead of one per batch, only while padded.
    """

    def __init__(self, num_channels: int, num_groups: int, eps: float = 1e-5,
                 affine: bool = True, device=None, dtype=None) -> None:
        super().__init__(num_groups=num_groups, num_channels=num_channels, eps=eps,
                         affine=affine, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        padding = _padding_now(x)
        if padding is None:
            return super().forward(x)
        sizes, batch_hw = padding
        if isinstance(sizes, Tensor):  # traced (an exported graph): masked sums
            return masked_group_norm(x, _region(x, sizes, batch_hw), self.num_groups,
                                     self.weight, self.bias, self.eps)
        h, w = x.shape[-2:]
        stride = map_stride((h, w), batch_hw)
        out = []
        for i, (vh, vw) in enumerate(sizes):
            ch, cw = math.ceil(vh / stride), math.ceil(vw / stride)
            # The crop made contiguous is the map a batch of one has: same kernel, same result.
            y = F.group_norm(x[i:i + 1, :, :ch, :cw].contiguous(), self.num_groups,
                             self.weight, self.bias, self.eps)
            out.append(F.pad(y, (0, w - cw, 0, h - ch)))
        return torch.cat(out)


def _zero_inputs_hook(module: nn.Module, args: tuple) -> Optional[tuple]:
    """Forward pre-hook: zero the padding of a module's input map(s) (a tensor, or a
    tuple / list of them, as a neck or head takes the previous stage's levels)."""
    if not args:
        return None
    first = args[0]
    if isinstance(first, Tensor):
        return (zero_outside(first), *args[1:])
    if isinstance(first, (list, tuple)) and all(isinstance(t, Tensor) for t in first):
        return (type(first)(zero_outside(t) for t in first), *args[1:])
    return None


def _zero_output_hook(module: nn.Module, args: tuple, output: Any) -> Any:
    """Forward hook: zero the padding of a leaf module's output map."""
    if isinstance(output, Tensor):
        return zero_outside(output)
    return None


def _replicate_input_hook(module: nn.Module, args: tuple) -> Optional[tuple]:
    """Forward pre-hook for bilinear upsampling: edge-replicate the input map."""
    if args and isinstance(args[0], Tensor):
        return (replicate_outside(args[0]), *args[1:])
    return None


def _dense_head_output_hook(module: nn.Module, args: tuple, output: Any) -> Any:
    """Forward hook on a sigmoid dense head: no score from the padding (see OUTSIDE_LOGIT)."""
    if (isinstance(output, tuple) and output and isinstance(output[0], (list, tuple))
            and all(isinstance(t, Tensor) for t in output[0])):
        scores = [fill_outside(t, OUTSIDE_LOGIT) for t in output[0]]
        return (scores, *output[1:])
    return None


def _rpn_output_hook(module: nn.Module, args: tuple, output: Any) -> Any:
    """Forward hook on an RPN head: besides score 0, its padding anchors' boxes are pushed
    past the image (:data:`OUTSIDE_DELTA` on each anchor's dx and dy), so clipping empties
    them and ``min_bbox_size`` drops them: alone, those anchors do not exist."""
    output = _dense_head_output_hook(module, args, output) or output
    if len(output) < 2 or not all(isinstance(t, Tensor) for t in output[1]):
        return output
    deltas = []
    for t in output[1]:
        padding = _padding_now(t)
        if padding is None:
            deltas.append(t)
            continue
        reg_dim = getattr(module.bbox_coder, 'encode_size', 4)  # per anchor: dx, dy, dw, dh
        shift = (torch.arange(t.shape[1], device=t.device) % reg_dim < 2)[None, :, None, None]
        deltas.append(t.masked_fill(shift & ~_region(t, *padding), OUTSIDE_DELTA))
    return (output[0], deltas, *output[2:])


def _replicate_maps_hook(module: nn.Module, args: tuple) -> Optional[tuple]:
    """Forward pre-hook on an RoI extractor: edge-replicate its input maps (RoIAlign's
    border clamping alone, see the module docstring)."""
    if args and isinstance(args[0], (list, tuple)) and all(isinstance(t, Tensor) for t in args[0]):
        return (type(args[0])(replicate_outside(t) for t in args[0]), *args[1:])
    return None


def _decode_head_output_hook(module: nn.Module, args: tuple, output: Any) -> Any:
    """Forward hook on a segmentation head's ``conv_seg``: edge-replicate its logits, which
    mmseg resizes bilinearly to the input size."""
    if isinstance(output, Tensor):
        return replicate_outside(output)
    return None


def _works_on_maps(head: nn.Module) -> bool:
    """Whether a head takes and makes maps at strides: mmdet's dense heads and mmseg's decode
    heads (by base class name, so that neither library is imported); not e.g. DETR's head,
    which works on queries."""
    return any(c.__name__ in ('BaseDenseHead', 'BaseDecodeHead') for c in type(head).__mro__)


def _is_a(module: nn.Module, class_name: str) -> bool:
    """Whether ``module``'s class is, or derives from, the mmdet class ``class_name`` (by
    name, so that mmdet is not imported)."""
    return any(c.__name__ == class_name for c in type(module).__mro__)


def _rpn_drops_padding(head: nn.Module) -> bool:
    """Whether an RPN head drops the anchors :func:`_rpn_output_hook` moves: its coder, given
    :data:`OUTSIDE_DELTA`, decodes a box that clipping to the image leaves empty, and its test
    config filters empty boxes (``min_bbox_size >= 0``, as mmdet's configs set)."""
    coder, cfg = getattr(head, 'bbox_coder', None), getattr(head, 'test_cfg', None) or {}
    if coder is None or cfg.get('min_bbox_size', -1) < 0 or getattr(coder, 'encode_size', 4) != 4:
        return False
    try:
        box = coder.decode(torch.tensor([[0., 0., 64., 32.]]),
                           torch.tensor([[OUTSIDE_DELTA, OUTSIDE_DELTA, 0., 0.]]),
                           max_shape=(96, 128))
    except Exception:  # an unknown coder: not known to drop them
        return False
    box = box.reshape(-1)
    return bool(box[2] - box[0] <= cfg['min_bbox_size'] or box[3] - box[1] <= cfg['min_bbox_size'])


def _is_bilinear_upsample(module: nn.Module) -> bool:
    """nn.Upsample or mmseg's Upsample (both keep ``mode``), resizing bilinearly."""
    return type(module).__name__ == 'Upsample' and getattr(module, 'mode', None) in _BILINEAR_MODES


def install_map_masks(model: nn.Module, mask_modules: Sequence[str] = DEFAULT_MASK_MODULES
                      ) -> Tuple[List[Any], List[str]]:
    """Put the neck / head masking hooks on ``model``'s ``mask_modules`` (see the module
    docstring); they act while :func:`padded_batch` is set, and do nothing otherwise.

    Shared by :class:`BatchInvariance` (eager) and the exported RetinaNet graph
    (:class:`pvt_mm.deploy.retinanet.RetinaNetGraph`, :func:`masked_maps`).

    Returns:
        ``(handles, plain_gn)``: the hooks' handles (``.remove()`` each), and the names of
        plain ``nn.GroupNorm`` layers met (still batch-dependent; the caller warns).
    """
    handles: List[Any] = []
    plain_gn: List[str] = []
    for attr in mask_modules:
        sub = getattr(model, attr, None)
        for part in (sub if isinstance(sub, nn.ModuleList) else [sub]):
            if isinstance(part, nn.Module) and (attr == 'neck' or _works_on_maps(part)):
                plain_gn += _mask_part(part, attr, handles)
            elif isinstance(part, nn.Module) and _is_a(part, 'BaseRoIHead'):
                _mask_roi_head(part, handles)
    return handles, plain_gn


def _mask_roi_head(roi_head: nn.Module, handles: List[Any]) -> None:
    """Edge-replicate the maps of every RoI extractor of a two-stage detector's RoI head
    (shared ones once; a cascade's per stage). Its bbox / mask heads work per RoI: once each
    RoI's features are its own, so are their outputs."""
    for module in roi_head.modules():  # each module once, shared or not
        if _is_a(module, 'BaseRoIExtractor'):
            handles.append(module.register_forward_pre_hook(_replicate_maps_hook))


def _mask_part(part: nn.Module, attr: str, handles: List[Any]) -> List[str]:
    handles.append(part.register_forward_pre_hook(_zero_inputs_hook))
    plain_gn = []
    for name, leaf in part.named_modules():
        if next(leaf.children(), None) is not None:
            continue
        if isinstance(leaf, MaskedGN):
            continue  # zeroes its own padding
        if isinstance(leaf, nn.GroupNorm):
            plain_gn.append(f'{attr}.{name}')
        if _is_bilinear_upsample(leaf):
            handles.append(leaf.register_forward_pre_hook(_replicate_input_hook))
        handles.append(leaf.register_forward_hook(_zero_output_hook))
    if getattr(part, 'use_sigmoid_cls', False) and _is_a(part, 'RPNHead'):
        if not _rpn_drops_padding(part):
            warnings.warn(
                f'{attr}: its box coder or test_cfg (min_bbox_size < 0) does not drop the '
                'anchors in the batch padding, so score-0 proposals from there reach the RoI '
                'head and its results still depend on the batch.', stacklevel=4)
        handles.append(part.register_forward_hook(_rpn_output_hook))
    elif getattr(part, 'use_sigmoid_cls', False):
        handles.append(part.register_forward_hook(_dense_head_output_hook))
    elif isinstance(getattr(part, 'conv_seg', None), nn.Module):  # mmseg's BaseDecodeHead
        # On conv_seg (the logits' last op; after its zeroing hook above), not on the head:
        # mmseg's BaseDecodeHead.predict / loss call self.forward, past the head's own hooks.
        handles.append(part.conv_seg.register_forward_hook(_decode_head_output_hook))
    return plain_gn


def _warn_plain_gn(plain_gn: Sequence[str]) -> None:
    if plain_gn:
        warnings.warn(
            f'{", ".join(plain_gn)}: nn.GroupNorm takes statistics over the padding too, so '
            "those results still depend on the batch; use norm_cfg=dict(type='MaskedGN', "
            'num_groups=...) (the same parameters, so checkpoints load).', stacklevel=3)


@contextlib.contextmanager
def masked_maps(model: nn.Module, sizes: Union[Sequence[HW], Tensor, None],
                batch_hw: Optional[Sequence[int]],
                mask_modules: Sequence[str] = DEFAULT_MASK_MODULES) -> Iterator[None]:
    """For the ``with`` block: ``sizes`` / ``batch_hw`` current (:func:`padded_batch`, read
    by the backbone too) and ``model``'s neck and heads masked (:func:`install_map_masks`).

    For a forward that the model's own forward does not wrap, e.g. an exported graph that
    calls ``extract_feat`` and the head itself (the hooks run while it is traced, so their
    ops are in the file; they are removed on leaving).
    """
    handles, plain_gn = install_map_masks(model, mask_modules)
    _warn_plain_gn(plain_gn)
    try:
        with padded_batch(sizes, batch_hw):
            yield
    finally:
        for handle in handles:
            handle.remove()


def _slides(model: nn.Module) -> bool:
    """Whether a segmentor predicts by sliding windows (mmseg's ``test_cfg.mode='slide'``)."""
    test_cfg = getattr(model, 'test_cfg', None)
    return hasattr(test_cfg, 'get') and test_cfg.get('mode') == 'slide'


class BatchInvariance:
    """The hooks that carry the valid sizes into a model's forward and mask its neck and
    heads; :meth:`remove` takes them all off.

    Args:
        model: The detector / segmentor (unwrapped: not its DDP wrapper). Its ``forward``
            takes ``inputs`` (the padded batch) and ``data_samples``, as mmengine's
            ``BaseModel`` does.
        mask_modules: The attributes of ``model`` whose maps are masked; missing ones are
            skipped. ``()`` carries the valid sizes to the backbone only.
        divisor: What a batch of one is padded to a multiple of (default: read from the
            model's data preprocessor at each forward, :func:`preprocessor_divisor`).
    """

    def __init__(self, model: nn.Module,
                 mask_modules: Sequence[str] = DEFAULT_MASK_MODULES,
                 divisor: Optional[int] = -1) -> None:
        self.model = model
        self.divisor = divisor
        self._handles: List[Any] = []
        self._contexts: List[contextlib.ExitStack] = []
        self._handles.append(model.register_forward_pre_hook(self._enter, with_kwargs=True))
        # always_call: the context is left even when the forward raises (torch >= 2.0).
        self._handles.append(model.register_forward_hook(self._leave, always_call=True))
        handles, plain_gn = install_map_masks(model, mask_modules)
        self._handles += handles
        _warn_plain_gn(plain_gn)

    def _enter(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        inputs = kwargs.get('inputs', args[0] if args else None)
        samples = kwargs.get('data_samples', args[1] if len(args) > 1 else None)
        stack = contextlib.ExitStack()
        # Pushed first: the always-called forward hook pops one entry even when this raises.
        self._contexts.append(stack)
        if isinstance(inputs, Tensor) and inputs.dim() == 4:
            batch_hw = tuple(inputs.shape[-2:])
            divisor = preprocessor_divisor(module) if self.divisor == -1 else self.divisor
            sizes = sizes_from_data_samples(samples, batch_hw, divisor)
            if not module.training and is_padded(sizes, batch_hw) and _slides(module):
                raise ValueError(
                    "test_cfg mode='slide' slides its windows over the padded batch, so a "
                    "smaller image's windows are not those it gets alone and its result "
                    'depends on the batch; batch invariance cannot mask that. Test with '
                    "test_dataloader.batch_size=1, or with model.test_cfg.mode='whole'.")
            # No img_shape (e.g. mode='tensor' without data samples): leave whatever the
            # caller set around this call (padded_batch) as it is.
            if sizes is not None or divisor is None:
                stack.enter_context(padded_batch(sizes, batch_hw))

    def _leave(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._contexts:
            self._contexts.pop().close()

    def remove(self) -> None:
        """Take every hook off (the model behaves as without batch invariance)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        while self._contexts:
            self._contexts.pop().close()


def enable_batch_invariance(model: nn.Module,
                            mask_modules: Sequence[str] = DEFAULT_MASK_MODULES
                            ) -> BatchInvariance:
    """Install :class:`BatchInvariance` on ``model`` (unwrapped from DDP if wrapped).

    For use without a runner (e.g. after mmdet's ``init_detector``); with one, the config's
    ``custom_hooks=[dict(type='BatchInvariantHook')]`` does it.
    """
    from mmengine.model import is_model_wrapper
    if is_model_wrapper(model):
        model = model.module
    return BatchInvariance(model, mask_modules)


__all__ = ['MaskedGN', 'BatchInvariance', 'enable_batch_invariance', 'padded_batch',
           'install_map_masks', 'masked_maps', 'masked_group_norm',
           'sizes_from_data_samples', 'preprocessor_divisor', 'zero_outside', 'fill_outside',
           'replicate_outside', 'OUTSIDE_LOGIT', 'OUTSIDE_DELTA', 'DEFAULT_MASK_MODULES']
