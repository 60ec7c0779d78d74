"""Building blocks of the Pyramid Vision Transformer.

Tokens travel between blocks as ``(B, N, C)`` tensors together with the spatial size
``(H, W)`` of the grid they came from; ``N = num_prefix_tokens + H * W`` where the prefix
holds the class token when there is one.

How the attention and the FFN run on a device (query groups, token chunks) is decided in
:mod:`pvt_mm.models.ops`; the layers here hold the maths.
"""
from typing import Tuple

import torch
from torch import Tensor, nn

from . import ops

HW = Tuple[int, int]


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: a conv with kernel = stride = ``patch_size``,
    then LayerNorm.

    Sizes that are not a multiple of ``patch_size`` lose their last rows/columns, exactly
    like the official PVT (the conv floors).

    Args:
        in_channels: Channels of the input map.
        embed_dims: Channels of the output tokens.
        patch_size: Side of each square patch (kernel and stride of the conv).
        norm_eps: LayerNorm epsilon.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dims, eps=norm_eps)

    def forward(self, x: Tensor) -> Tuple[Tensor, HW]:
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys and values come from a grid shrunk R x R times.

    Queries keep full resolution; keys/values are computed from the tokens after a conv
    with kernel = stride = ``sr_ratio`` and a LayerNorm, so the cost drops by ``R**2``.
    Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`, which
    never materialises the attention matrix when a fused kernel is available; how its
    queries are scheduled on the device (query groups for the backward) is
    :func:`pvt_mm.models.ops.attention_query_groups`' choice.

    Args:
        embed_dims: Token channels.
        num_heads: Attention heads; must divide ``embed_dims``.
        sr_ratio: Spatial reduction ratio R (1 disables the reduction).
        qkv_bias: Whether the q and kv projections have a bias.
        attn_drop: Dropout on the attention weights (training only).
        proj_drop: Dropout after the output projection.
        norm_eps: LayerNorm epsilon of the reduction.
    """

    def __init__(self, embed_dims: int, num_heads: int, sr_ratio: int = 1,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads ({num_heads})')
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.attn_drop = attn_drop
        # Names q / kv / sr / norm / proj follow the official release so weights map 1:1.
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, embed_dims * 2, bias=qkv_bias)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def _reduce(self, x: Tensor, hw: HW, num_prefix_tokens: int) -> Tensor:
        """Shrink the spatial tokens R x R times; prefix tokens (class token) pass through."""
        if self.sr_ratio == 1:
            return x
        prefix, spatial = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]
        b, _, c = spatial.shape
        # A (B, H, W, C) view permuted to NCHW is channels-last in memory: no copy needed.
        grid = spatial.reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2)
        reduced = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
        return torch.cat((prefix, reduced), dim=1) if num_prefix_tokens else reduced

    def forward(self, x: Tensor, hw: HW, num_prefix_tokens: int = 0) -> Tensor:
        b, n, c = x.shape
        heads, head_dims = self.num_heads, c // self.num_heads
        q = self.q(x).reshape(b, n, heads, head_dims)
        k, v = self.kv(self._reduce(x, hw, num_prefix_tokens)).reshape(
            b, -1, 2, heads, head_dims).unbind(2)
        groups = ops.attention_query_groups(
            x.device, q.dtype, b, heads, n, k.shape[1],
            needs_grad=torch.is_grad_enabled() and q.requires_grad)
        x = ops.grouped_attention(q, k, v, groups,
                                  dropout_p=self.attn_drop if self.training else 0.0)
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
    """Two-layer MLP with GELU, the Transformer feed-forward block.

    Training runs through a fused function that keeps only the input and the
    pre-activation and recomputes GELU in backward (stage 1 at 800x1333: 130 MiB less per
    layer), unless dropout is active. Without autograd the tokens may go through in chunks
    (the hidden activations are the largest tensors of the backbone; every token is
    independent, so the result is the same); :func:`pvt_mm.models.ops.ffn_chunk_tokens`
    decides per device.

    Args:
        embed_dims: Token channels.
        hidden_dims: Hidden channels (``mlp_ratio * embed_dims``).
        drop: Dropout after the activation and after the second layer.
        chunk_tokens: ``'auto'`` (chunks of 4096 tokens on CPU inference, one piece on a
            GPU), tokens per chunk on every device (low memory), or ``None`` (one piece).
    """

    def __init__(self, embed_dims: int, hidden_dims: int, drop: float = 0.0,
                 chunk_tokens: ops.FFNChunkSetting = 'auto') -> None:
        super().__init__()
        self.chunk_tokens = ops.check_ffn_chunk_setting(chunk_tokens)
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)

    def _mlp(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))

    def forward(self, x: Tensor) -> Tensor:
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or self.fc1.weight.requires_grad or self.fc2.weight.requires_grad)
        if needs_grad:
            if self.training and self.drop.p > 0:
                return self._mlp(x)  # the dropout mask would need keeping too
            return ops.linear_gelu_linear(x, self.fc1.weight, self.fc1.bias,
                                          self.fc2.weight, self.fc2.bias)
        chunk = ops.ffn_chunk_tokens(x.device, x.dtype, x.numel() // x.shape[-1],
                                     needs_grad=False, setting=self.chunk_tokens)
        return ops.run_token_chunks(self._mlp, x, chunk)

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
        norm_eps: LayerNorm epsilon.
        ffn_chunk_tokens: Tokens per FFN chunk without autograd (see :class:`FFN`).
    """

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float, sr_ratio: int,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, norm_eps: float = 1e-6,
                 ffn_chunk_tokens: ops.FFNChunkSetting = 'auto') -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.attn = SpatialReductionAttention(
            embed_dims, num_heads, sr_ratio, qkv_bias=qkv_bias, attn_drop=attn_drop,
            proj_drop=drop, norm_eps=norm_eps)
        self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.mlp = FFN(embed_dims, int(embed_dims * mlp_ratio), drop=drop,
                       chunk_tokens=ffn_chunk_tokens)
        self.drop_path = DropPathResidual(drop_path)

    def forward(self, x: Tensor, hw: HW, num_prefix_tokens: int = 0) -> Tensor:
        x = self.drop_path(x, self.attn(self.norm1(x), hw, num_prefix_tokens))
        return self.drop_path(x, self.mlp(self.norm2(x)))
