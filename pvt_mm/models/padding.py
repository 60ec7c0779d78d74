"""Where each image of a padded batch is valid, for batch invariance.

mmdet / mmseg pad every batch to its largest image. An image's result must not depend on the
others, so the modules that mix neighbouring or all tokens need each image's *valid size*: its
own size rounded up to the size divisor, as a batch of one would be padded. This module holds
that fact and nothing else: how the sizes are carried through a forward (a context set by the
caller, since mmdet's ``extract_feat`` passes only the tensor) and the region masks at any
stride. The modules that use them (backbone, neck / head wrappers, norms) live elsewhere.
"""
import contextlib
import contextvars
import math
from typing import Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

HW = Tuple[int, int]
#: What mmdet's / mmseg's data preprocessors pad a batch to a multiple of in every pvt_mm config.
SIZE_DIVISOR = 32

_VALID_SIZES: contextvars.ContextVar[Optional[Tuple[HW, ...]]] = contextvars.ContextVar(
    'pvt_mm_valid_sizes', default=None)


def own_padded_size(hw: Sequence[int], divisor: int = SIZE_DIVISOR) -> HW:
    """The size a batch of one pads an image of size ``hw`` to (rounded up to ``divisor``)."""
    return (int(math.ceil(hw[0] / divisor) * divisor), int(math.ceil(hw[1] / divisor) * divisor))


def valid_sizes(img_shapes: Sequence[Sequence[int]], batch_hw: Sequence[int],
                divisor: int = SIZE_DIVISOR) -> Tuple[HW, ...]:
    """Each image's valid size inside a batch padded to ``batch_hw``.

    Args:
        img_shapes: Each image's ``(h, w)`` before padding (mmdet's ``img_shape``).
        batch_hw: The padded batch's ``(H, W)``.
        divisor: The size divisor of the data preprocessor.

    Returns:
        ``(h, w)`` per image: its own padded size, never beyond the batch.
    """
    sizes = []
    for shape in img_shapes:
        h, w = own_padded_size(shape, divisor)
        sizes.append((min(h, int(batch_hw[0])), min(w, int(batch_hw[1]))))
    return tuple(sizes)


def is_padded(sizes: Optional[Sequence[HW]], batch_hw: Sequence[int]) -> bool:
    """Whether any image is smaller than the batch (else nothing needs a mask)."""
    return sizes is not None and any(h < batch_hw[0] or w < batch_hw[1] for h, w in sizes)


@contextlib.contextmanager
def batch_valid_sizes(sizes: Union[Sequence[HW], Tensor, None]) -> Iterator[None]:
    """Make ``sizes`` the valid sizes of the batch in flight for the ``with`` block.

    ``None`` means "every image fills the batch" (the behaviour without batch invariance).
    A ``(B, 2)`` integer tensor (an exported graph's sizes, :func:`padded_valid_sizes`) is
    kept as it is: reading it back to Python ints would freeze it in a traced graph.
    """
    if sizes is not None and not isinstance(sizes, Tensor):
        sizes = tuple(tuple(map(int, s)) for s in sizes)
    token = _VALID_SIZES.set(sizes)
    try:
        yield
    finally:
        _VALID_SIZES.reset(token)


def current_valid_sizes() -> Union[Tuple[HW, ...], Tensor, None]:
    """The valid sizes set by :func:`batch_valid_sizes` around this forward, or ``None``."""
    return _VALID_SIZES.get()


def region_mask(sizes: Union[Sequence[HW], Tensor], hw: Sequence[int], stride: int,
                device: Union[str, torch.device, None] = None) -> Tensor:
    """``(B, 1, h, w)`` bool: True where a map of size ``hw`` at ``stride`` lies in each image.

    A cell is valid when it starts inside the image's valid size (``ceil(size / stride)``
    cells per side), which is what a batch of one at that size computes.

    Args:
        sizes: ``(h, w)`` per image, or a ``(B, 2)`` integer tensor (traced while exporting).
        hw: The map's ``(h, w)``.
        stride: The map's stride relative to the input.
        device: Where to build the mask (default: ``sizes``' device, or the CPU).
    """
    # No int() on hw: a traced graph's sides are symbolic, and int() would pin them.
    return cells_mask(region_cells(sizes, stride, device), hw)


def padded_valid_sizes(img_shapes: Union[Sequence[Sequence[int]], Tensor], batch_hw: Sequence[int],
                       divisor: int = SIZE_DIVISOR) -> Union[Tuple[HW, ...], Tensor]:
    """:func:`valid_sizes` for a list of shapes or a ``(B, 2)`` integer tensor.

    A tensor (an exported graph's ``img_shapes`` input) stays a tensor: the rounding and the
    clipping are tensor ops, so a traced graph keeps them for every input.
    """
    if not isinstance(img_shapes, Tensor):
        return valid_sizes(img_shapes, batch_hw, divisor)
    shapes = img_shapes[:, :2].long()
    rounded = torch.div(shapes + (divisor - 1), divisor, rounding_mode='floor') * divisor
    # clamp by the batch's (possibly symbolic) sides: no int() that would pin them in a graph
    return torch.stack((rounded[:, 0].clamp(max=batch_hw[0]),
                        rounded[:, 1].clamp(max=batch_hw[1])), dim=1)


def region_cells(sizes: Union[Sequence[HW], Tensor], stride: int,
                 device: Union[str, torch.device, None] = None) -> Tensor:
    """``(B, 2)`` long: each image's valid rows and columns on a map at ``stride``
    (``ceil(size / stride)``, the cells :func:`region_mask` marks valid)."""
    if not isinstance(sizes, Tensor):
        sizes = torch.tensor([list(s) for s in sizes], dtype=torch.long, device=device)
    return torch.div(sizes + (stride - 1), stride, rounding_mode='floor')


def _region_pooling_matrix(cells: Tensor, length: int, out: int, like: Tensor) -> Tensor:
    """``(B, out, length)``: row ``i`` of image ``b`` averages the cells
    ``[floor(i*n/out), ceil((i+1)*n/out))`` of its own ``n = cells[b]`` valid ones -- the
    windows of :func:`torch.nn.functional.adaptive_avg_pool2d` over its valid part only."""
    n = cells[:, None]  # (B, 1)
    idx = torch.arange(out, device=like.device)[None]  # (1, out)
    start = torch.div(idx * n, out, rounding_mode='floor')
    end = torch.div((idx + 1) * n + out - 1, out, rounding_mode='floor')
    pos = torch.arange(length, device=like.device)
    inside = (pos[None, None] >= start[..., None]) & (pos[None, None] < end[..., None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[..., None]


def region_adaptive_avg_pool2d(x: Tensor, cells: Tensor, size: int) -> Tensor:
    """Adaptive average pooling of each image's valid region only, to ``size x size``.

    What :func:`torch.nn.functional.adaptive_avg_pool2d` gives for each image cropped to its
    valid ``cells`` (the image alone), computed for the whole padded batch at once as two
    products with per-image pooling matrices (no per-image loop, exportable).

    Args:
        x: ``(B, C, H, W)`` maps.
        cells: ``(B, 2)`` valid rows and columns per image (:func:`region_cells`).
        size: Side of the pooled grid.
    """
    rows = _region_pooling_matrix(cells[:, 0], x.shape[-2], size, x)  # (B, size, H)
    cols = _region_pooling_matrix(cells[:, 1], x.shape[-1], size, x)  # (B, size, W)
    return rows[:, None] @ x @ cols[:, None].transpose(-1, -2)


# --- The padded batch's input size, for the neck / head side (s27-neck) -------------------
# The backbone reads its input's size from its own input tensor; a neck or head module sees
# only a feature map, so the size of the padded batch it came from (hence the map's stride)
# is carried alongside the valid sizes.

_BATCH_INPUT_SIZE: contextvars.ContextVar[Optional[HW]] = contextvars.ContextVar(
    'pvt_mm_batch_input_size', default=None)


@contextlib.contextmanager
def batch_input_size(hw: Optional[Sequence[int]]) -> Iterator[None]:
    """Make ``hw`` the padded batch's ``(H, W)`` for the ``with`` block (``None``: unknown).

    Symbolic sides (a traced graph's ``images.shape[2:]``) stay symbolic: ``int()`` would
    pin the graph to the example's size.
    """
    token = _BATCH_INPUT_SIZE.set(
        None if hw is None else tuple(d if isinstance(d, torch.SymInt) else int(d) for d in hw[:2]))
    try:
        yield
    finally:
        _BATCH_INPUT_SIZE.reset(token)


def current_batch_input_size() -> Optional[HW]:
    """The padded batch's ``(H, W)`` set by :func:`batch_input_size`, or ``None``."""
    return _BATCH_INPUT_SIZE.get()


def map_stride(hw: Sequence[int], batch_hw: Sequence[int]) -> int:
    """The stride of a feature map of size ``hw`` computed from a batch of size ``batch_hw``.

    A stride-``s`` map of a padded conv network has ``ceil(H / s)`` rows and ``ceil(W / s)``
    columns (``floor`` for an unpadded strided conv or pool, e.g. PVT v1's patch embedding
    of a size that is no multiple of 4); the first such ``s`` (powers of two first) is
    returned.

    Raises:
        ValueError: No integer stride gives this map size (e.g. a map resized to an arbitrary
            size); such a module cannot be masked by stride, so leave it out of the masking.
    """
    big_h, big_w = int(batch_hw[0]), int(batch_hw[1])
    h, w = int(hw[0]), int(hw[1])
    powers = [2 ** k for k in range(13)]
    others = [max(1, big_h // h), max(1, -(-big_h // h))] if h > 0 else []
    for stride in powers + others:
        if -(-big_h // stride) == h and -(-big_w // stride) == w:
            return stride
    for stride in powers:  # floor: only the powers of two a pyramid's strides are
        if big_h // stride == h and big_w // stride == w:
            return stride
    raise ValueError(
        f'A {h}x{w} feature map has no integer stride in a {big_h}x{big_w} batch, so its '
        'valid region is unknown; leave the module that makes it out of the batch-invariance '
        'masking (BatchInvariantHook(mask_modules=...)).')


def traced_region_cells(sizes: Tensor, hw: Sequence, batch_hw: Sequence) -> Tensor:
    """``(B, 2)`` long: each image's valid rows and columns on a map of size ``hw`` from a
    padded batch of size ``batch_hw``, for ``(B, 2)`` tensor sizes (an exported graph's).

    :func:`map_stride`'s search (the first power of two ``s`` with ``ceil(H / s)`` cells
    per side, else with ``floor(H / s)``), then :func:`region_cells` at that stride, done
    as tensor ops on the sides, so that a traced graph keeps them symbolic: no guard pins
    the file to the example's size.
    """
    device = sizes.device
    big = torch.stack([torch.tensor(batch_hw[0]), torch.tensor(batch_hw[1])]).to(device)
    small = torch.stack([torch.tensor(hw[0]), torch.tensor(hw[1])]).to(device)
    powers = 2 ** torch.arange(13, device=device)[:, None]  # (13, 1)
    ceil_fit = (torch.div(big + powers - 1, powers, rounding_mode='floor') == small).all(1)
    floor_fit = (torch.div(big, powers, rounding_mode='floor') == small).all(1)
    fit = ceil_fit | (floor_fit & ~ceil_fit.any())  # logical ops: ONNX Runtime has no bool Where
    stride = powers[fit.int().argmax(), 0]  # the first fit (argmax returns the first max)
    return torch.div(sizes.long() + stride - 1, stride, rounding_mode='floor')


def cells_mask(cells: Tensor, hw: Sequence) -> Tensor:
    """``(B, 1, h, w)`` bool: True on each image's first ``cells`` ``(B, 2)`` rows and
    columns of a map of size ``hw`` (what :func:`region_mask` marks, from the cells)."""
    rows = torch.arange(hw[0], device=cells.device)
    cols = torch.arange(hw[1], device=cells.device)
    valid_rows = rows[None, :] < cells[:, 0:1]
    valid_cols = cols[None, :] < cells[:, 1:2]
    return (valid_rows[:, :, None] & valid_cols[:, None, :])[:, None]
