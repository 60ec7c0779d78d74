"""Building blocks of the Pyramid Vision Transformer.

Tokens travel between blocks as ``(B, N, C)`` tensors together with the spatial size
``(H, W)`` of the grid they came from; ``N = num_prefix_tokens + H * W`` where the prefix
holds the class token when there is one.

How the attention and the FFN run on a device (query groups, token chunks) is decided in
:mod:`pvt_mm.models.ops` and run by :mod:`pvt_mm.models.kernels` (and, while exporting,
:mod:`pvt_mm.models.export_ops`); the layers here hold the maths.
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..capabilities import is_exporting
from . import export_ops, kernels, ops
from .padding import region_adaptive_avg_pool2d, region_cells, region_mask

HW = Tuple[int, int]


class TokenRegion:
    """Where each image of a padded batch is valid on one stage's token grid.

    The backbone builds one per stage from the images' valid sizes (see
    :mod:`pvt_mm.models.padding`) and hands it to every layer of the stage; ``None`` in its
    place means every image fills the batch (the plain path, unchanged). The masks are
    built once per stage and reused by its layers.

    Args:
        sizes: Each image's valid ``(h, w)`` in input pixels, or a ``(B, 2)`` long tensor.
        hw: The stage's token grid ``(h, w)``.
        stride: The stage's stride relative to the input.
        num_prefix_tokens: Tokens before the grid (the class token), always valid.
        device: Where the tokens live.
    """

    def __init__(self, sizes: Union[Sequence[HW], Tensor], hw: HW, stride: int,
                 num_prefix_tokens: int, device: torch.device) -> None:
        self.sizes = sizes
        self.hw = hw
        self.stride = stride
        self.num_prefix_tokens = num_prefix_tokens
        #: ``(B, 2)``: valid rows and columns of each image on this grid.
        self.cells = region_cells(sizes, stride, device)
        #: ``(B, 1, h, w)`` bool, True inside each image.
        self.mask = region_mask(sizes, hw, stride, device)
        #: ``(B, h*w, 1)`` bool, True on the tokens outside each image.
        self.outside_tokens = ~self.mask.flatten(2).transpose(1, 2)
        self._key_masks: Dict[int, Tensor] = {}

    def zero_outside(self, x: Tensor, inplace: bool = False) -> Tensor:
        """Tokens ``(B, prefix + h*w, C)`` with the grid tokens outside each image zeroed,
        as the zero padding of a conv sees the border of an image alone (``inplace``: in
        ``x`` itself, which no backward may need, when autograd does not record it)."""
        if not self.num_prefix_tokens:
            if inplace and not (torch.is_grad_enabled() and x.requires_grad):
                return x.masked_fill_(self.outside_tokens, 0.0)
            # Not in place under autograd (on a view, autograd would copy the whole base
            # back), and torch.where, not masked_fill (which clones first): one pass each way.
            return torch.where(self.outside_tokens, 0.0, x)
        prefix = self.num_prefix_tokens
        return torch.cat((x[:, :prefix], torch.where(self.outside_tokens, 0.0, x[:, prefix:])), 1)

    def key_mask(self, sr_ratio: int) -> Tensor:
        """``(B, 1, 1, prefix + (h // R) * (w // R))`` bool: the keys of a reduction by
        ``sr_ratio`` (1: the tokens themselves) whose cell is not wholly in the padding.

        Valid sizes are multiples of 32 (stride x R in every PVT stage), so no cell
        straddles an image's border: a kept key reads valid tokens only.
        """
        if sr_ratio not in self._key_masks:
            grid = (self.hw[0] // sr_ratio, self.hw[1] // sr_ratio)
            keys = region_mask(self.sizes, grid, self.stride * sr_ratio,
                               self.mask.device).flatten(1)  # (B, M)
            if self.num_prefix_tokens:
                keys = torch.cat((keys.new_ones(keys.shape[0], self.num_prefix_tokens), keys), 1)
            self._key_masks[sr_ratio] = keys[:, None, None]
        return self._key_masks[sr_ratio]


#: LayerNorm epsilon of the patch embeddings and of the attention's reduction: torch's
#: default, as in the official PVT v1 and v2 (their blocks and stage norms use 1e-6).
EMBED_NORM_EPS = 1e-5


class PatchEmbed(nn.Module):
    """Patch embedding: a conv with stride ``patch_size``, then LayerNorm.

    PVT v1 uses non-overlapping patches (kernel = stride, no padding): a side that is not
    a multiple of the stride loses its remainder (the conv floors). PVT v2 uses
    overlapping patches (kernel 7 / stride 4 / padding 3, then 3 / 2 / 1), which give
    ``ceil(side / stride)`` cells.

    Args:
        in_channels: Channels of the input map.
        embed_dims: Channels of the output tokens.
        patch_size: Stride of the conv (the downsampling factor).
        kernel_size: Side of the conv kernel; ``None`` means ``patch_size``
            (non-overlapping patches).
        padding: Zero padding on every side of the input.
        norm_eps: LayerNorm epsilon (the official models use torch's default).
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int,
                 kernel_size: Optional[int] = None, padding: int = 0,
                 norm_eps: float = EMBED_NORM_EPS) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size=kernel_size or patch_size,
                              stride=patch_size, padding=padding)
        self.norm = nn.LayerNorm(embed_dims, eps=norm_eps)

    def forward(self, x: Tensor) -> Tuple[Tensor, HW]:
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys and values come from a shrunk grid.

    Queries keep full resolution. Keys/values come from the tokens after a reduction:
    a conv with kernel = stride = ``sr_ratio`` and a LayerNorm (PVT v1 and v2, the cost
    drops by ``R**2``), or with ``linear=True`` (PVT v2-li) an adaptive average pool to
    7 x 7, a 1x1 conv, a LayerNorm and GELU (a fixed 49 keys at any input size).
    Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`, which
    never materialises the attention matrix when a fused kernel is available; how its
    queries are scheduled on the device (query groups for the backward) is
    :func:`pvt_mm.models.ops.attention_query_groups`' choice.

    Given a :class:`TokenRegion` (a padded batch of mixed sizes), each image attends only to
    the keys of its own valid region (a boolean mask into the same fused call; the keys of
    cells wholly in the padding are masked out), and linear SRA pools each image's valid
    region only: every valid query gets what it gets with the image alone.

    Args:
        embed_dims: Token channels.
        num_heads: Attention heads; must divide ``embed_dims``.
        sr_ratio: Spatial reduction ratio R (1 disables the reduction; ignored when
            ``linear``).
        qkv_bias: Whether the q and kv projections have a bias.
        attn_drop: Dropout on the attention weights (training only).
        proj_drop: Dropout after the output projection.
        norm_eps: LayerNorm epsilon of the reduction (the official models: torch's default).
        linear: Linear SRA (PVT v2-li): pool to :attr:`LINEAR_POOL_SIZE` instead of the
            strided conv.
    """

    #: Side of the key grid of linear SRA.
    LINEAR_POOL_SIZE = 7

    def __init__(self, embed_dims: int, num_heads: int, sr_ratio: int = 1,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 norm_eps: float = EMBED_NORM_EPS, linear: bool = False) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads ({num_heads})')
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.linear = linear
        self.attn_drop = attn_drop
        # Names q / kv / sr / norm / proj follow the official release so weights map 1:1.
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, embed_dims * 2, bias=qkv_bias)
        self.reduces = linear or sr_ratio > 1
        if linear:
            self.sr = nn.Conv2d(embed_dims, embed_dims, kernel_size=1, stride=1)
            self.act = nn.GELU()
        elif sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, kernel_size=sr_ratio, stride=sr_ratio)
        if self.reduces:
            self.norm = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def reduced_hw(self, hw: HW) -> HW:
        """The grid of the keys for a ``hw`` grid of queries."""
        if self.linear:
            return (self.LINEAR_POOL_SIZE, self.LINEAR_POOL_SIZE)
        # A conv with kernel = stride = R floors.
        return (hw[0] // self.sr_ratio, hw[1] // self.sr_ratio)

    def reduce_keys(self, x: Tensor, hw: HW, num_prefix_tokens: int,
                    region: Optional[TokenRegion] = None) -> Tensor:
        """Shrink the spatial tokens to the key grid; prefix tokens (class token) pass through.
        With a ``region``, linear SRA pools each image's valid region only."""
        if not self.reduces:
            return x
        prefix, spatial = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]
        b, _, c = spatial.shape
        # A (B, H, W, C) view permuted to NCHW is channels-last in memory: no copy needed.
        grid = spatial.reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2)
        if self.linear:
            if region is None:
                pooled = export_ops.adaptive_avg_pool2d(grid, self.LINEAR_POOL_SIZE)
            else:  # the 7x7 averages of the image alone: over its valid cells only
                pooled = region_adaptive_avg_pool2d(grid, region.cells, self.LINEAR_POOL_SIZE)
            reduced = self.act(self.norm(self.sr(pooled).flatten(2).transpose(1, 2)))
        else:
            reduced = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
        return torch.cat((prefix, reduced), dim=1) if num_prefix_tokens else reduced

    def forward(self, x: Tensor, hw: HW, num_prefix_tokens: int = 0,
                region: Optional[TokenRegion] = None) -> Tensor:
        """Attend ``(B, prefix + h*w, C)`` tokens; ``region``: where each image of a padded
        batch is valid (``None``: every image fills the batch)."""
        b, n, c = x.shape
        heads, head_dims = self.num_heads, c // self.num_heads
        q = self.q(x).reshape(b, n, heads, head_dims)
        k, v = self.kv(self.reduce_keys(x, hw, num_prefix_tokens, region)).reshape(
            b, -1, 2, heads, head_dims).unbind(2)
        # Linear SRA's 49 pooled keys are all valid (each image pooled its own region).
        key_mask = None if region is None or self.linear else region.key_mask(self.sr_ratio)
        groups = ops.attention_query_groups(
            x.device, q.dtype, b, heads, n, k.shape[1],
            needs_grad=torch.is_grad_enabled() and q.requires_grad)
        x = kernels.grouped_attention(q, k, v, groups,
                                      dropout_p=self.attn_drop if self.training else 0.0,
                                      key_mask=key_mask)
        return self.proj_drop(self.proj(x))


class DropPathResidual(nn.Module):
    """``x + drop_path(branch)``: stochastic depth fused with the residual addition.

    One ``addcmul`` with a per-sample ``(B, 1, 1)`` scale instead of a divide, a multiply
    and an add over the whole tensor (mmcv's ``DropPath`` then ``+``); identical in
    expectation, and a plain addition in eval mode or when ``drop_prob`` is 0.

    Args:
        drop_prob: Probability of dropping the branch for a sample.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor, branch: Tensor) -> Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x + branch
        keep = 1.0 - self.drop_prob
        scale = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep).div_(keep)
        return torch.addcmul(x, branch, scale)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


class FFN(nn.Module):
    """Two-layer MLP with GELU, the Transformer feed-forward block; PVT v2 adds a 3x3
    depth-wise conv over the token grid between ``fc1`` and GELU (and v2-li a ReLU right
    after ``fc1``).

    The plain MLP (v1) trains through a fused function that keeps only the input and the
    pre-activation and recomputes GELU in backward (stage 1 at 800x1333: 130 MiB less per
    layer), unless dropout is active. Without autograd the tokens may go through in chunks
    (the hidden activations are the largest tensors of the backbone);
    :func:`pvt_mm.models.ops.ffn_chunk_tokens` decides per device, and never chunks an FFN
    whose tokens are not independent (the depth-wise conv mixes neighbours).

    Args:
        embed_dims: Token channels.
        hidden_dims: Hidden channels (``mlp_ratio * embed_dims``).
        drop: Dropout after the activation and after the second layer.
        chunk_tokens: ``'auto'`` (chunks of 4096 tokens on CPU inference, one piece on a
            GPU), tokens per chunk on every device (low memory), or ``None`` (one piece).
        dwconv: A 3x3 depth-wise conv over the ``hw`` grid after ``fc1`` (PVT v2); the
            forward then needs ``hw`` and tokens that are exactly the ``h * w`` grid.
        relu: A ReLU right after ``fc1`` (PVT v2-li).
    """

    def __init__(self, embed_dims: int, hidden_dims: int, drop: float = 0.0,
                 chunk_tokens: ops.FFNChunkSetting = 'auto', dwconv: bool = False,
                 relu: bool = False) -> None:
        super().__init__()
        self.chunk_tokens = ops.check_ffn_chunk_setting(chunk_tokens)
        #: Pieces of a token-wise FFN in an exported graph (set per stage by the export,
        #: :func:`pvt_mm.models.ops.export_ffn_chunks`; 1: one piece).
        self.export_chunks = 1
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.relu = nn.ReLU() if relu else None
        self.dwconv = (nn.Conv2d(hidden_dims, hidden_dims, 3, padding=1, groups=hidden_dims)
                       if dwconv else None)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)

    @property
    def token_wise(self) -> bool:
        """Whether every token is computed independently of the others (no depth-wise conv)."""
        return self.dwconv is None

    def _grid_conv(self, x: Tensor, hw: Optional[HW]) -> Tensor:
        if hw is None or x.dim() != 3 or x.shape[1] != hw[0] * hw[1]:
            raise ValueError(f'This FFN has a depth-wise conv over the token grid: call it with '
                             f'(B, h*w, C) tokens and their grid hw, got {tuple(x.shape)} and '
                             f'hw={hw}.')
        b, _, c = x.shape
        grid = x.reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2)
        return self.dwconv(grid).flatten(2).transpose(1, 2)

    def _mlp(self, x: Tensor, hw: Optional[HW] = None,
             region: Optional[TokenRegion] = None) -> Tensor:
        x = self.fc1(x)
        if self.relu is not None:
            x = self.relu(x)
        if self.dwconv is not None:
            if region is not None:  # the conv's zero padding at each image's own border
                # In place on fc1's fresh output (no backward reads it; ReLU's does, so not
                # after a ReLU): no copy of the largest activation.
                x = region.zero_outside(x, inplace=self.relu is None)
            x = self._grid_conv(x, hw)
        return self.drop(self.fc2(self.drop(self.act(x))))

    def forward(self, x: Tensor, hw: Optional[HW] = None,
                region: Optional[TokenRegion] = None) -> Tensor:
        """Run the FFN on tokens ``x`` (``(..., C)``; ``(B, h*w, C)`` with ``hw`` when it
        has the depth-wise conv). ``region`` (padded batches): the depth-wise conv reads
        zeros outside each image, as with the image alone; token-wise FFNs ignore it."""
        if not self.token_wise:
            # Never chunked (see ops.ffn_chunk_tokens): one piece, with or without autograd.
            return self._mlp(x, hw, region)
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if needs_grad:
            if self.relu is not None or (self.training and self.drop.p > 0):
                return self._mlp(x, hw)  # not the fused fc1-GELU-fc2 (or dropout masks to keep)
            return kernels.linear_gelu_linear(x, self.fc1.weight, self.fc1.bias,
                                              self.fc2.weight, self.fc2.bias)
        if is_exporting() and self.token_wise and self.export_chunks > 1:
            return export_ops.run_fixed_chunks(self._mlp, x, self.export_chunks)
        chunk = ops.ffn_chunk_tokens(x.device, x.dtype, x.numel() // x.shape[-1],
                                     needs_grad=False, setting=self.chunk_tokens,
                                     token_wise=self.token_wise)
        if chunk is None:
            return self._mlp(x, hw)
        return kernels.run_token_chunks(self._mlp, x, chunk)

    def extra_repr(self) -> str:
        return f'chunk_tokens={self.chunk_tokens!r}'


class EncoderLayer(nn.Module):
    """Pre-norm Transformer encoder layer with spatial-reduction attention.

    Args:
        embed_dims: Token channels.
        num_heads: Attention heads.
        mlp_ratio: Hidden width of the FFN relative to ``embed_dims``.
        sr_ratio: Spatial reduction ratio of the attention.
        qkv_bias: Whether q/kv projections have a bias.
        drop: Dropout inside the FFN and after the attention projection.
        attn_drop: Dropout on the attention weights.
        drop_path: Stochastic-depth rate of both residual branches.
        norm_eps: Epsilon of the layer's two LayerNorms (the attention's reduction norm
            keeps :data:`EMBED_NORM_EPS`, as in the official models).
        ffn_chunk_tokens: Tokens per FFN chunk without autograd (see :class:`FFN`).
        ffn_dwconv: The FFN's depth-wise conv (PVT v2).
        linear_sra: Linear SRA in the attention and a ReLU in the FFN (PVT v2-li).
    """

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float, sr_ratio: int,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, norm_eps: float = 1e-6,
                 ffn_chunk_tokens: ops.FFNChunkSetting = 'auto', ffn_dwconv: bool = False,
                 linear_sra: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.attn = SpatialReductionAttention(
            embed_dims, num_heads, sr_ratio, qkv_bias=qkv_bias, attn_drop=attn_drop,
            proj_drop=drop, linear=linear_sra)
        self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.mlp = FFN(embed_dims, int(embed_dims * mlp_ratio), drop=drop,
                       chunk_tokens=ffn_chunk_tokens, dwconv=ffn_dwconv, relu=linear_sra)
        self.drop_path = DropPathResidual(drop_path)

    def forward(self, x: Tensor, hw: HW, num_prefix_tokens: int = 0,
                region: Optional[TokenRegion] = None) -> Tensor:
        x = self.drop_path(x, self.attn(self.norm1(x), hw, num_prefix_tokens, region))
        return self.drop_path(x, self.mlp(self.norm2(x), hw, region))
