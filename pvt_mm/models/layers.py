"""Building blocks of the Pyramid Vision Transformer.

Tokens travel between blocks as ``(B, N, C)`` tensors together with the spatial size
``(H, W)`` of the grid they came from; ``N = num_prefix_tokens + H * W`` where the prefix
holds the class token when there is one.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HW = Tuple[int, int]


@torch.compiler.assume_constant_result
def _cpu_threads() -> int:
    """``torch.get_num_threads()``, a constant to torch.compile (no graph break)."""
    return torch.get_num_threads()


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
    never materialises the attention matrix when a fused kernel is available.

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

    @staticmethod
    def _query_groups(parallel_heads: int, num_queries: int, threads: int) -> int:
        """How many groups to split each head's queries into for a CPU training step.

        Doubles the groups until the ``parallel_heads * groups`` work items keep every
        thread busy: at least two per thread, and spread evenly (the busiest thread at
        most 10 % above the mean), as far as ``num_queries`` splits evenly.
        """
        groups = 1
        while groups < 64 and num_queries % (2 * groups) == 0:
            items = parallel_heads * groups
            busiest = -(-items // threads) * threads  # items rounded up to a multiple
            if items >= 2 * threads and busiest <= 1.1 * items:
                break
            groups *= 2
        return groups

    def forward(self, x: Tensor, hw: HW, num_prefix_tokens: int = 0) -> Tensor:
        b, n, c = x.shape
        heads, head_dims = self.num_heads, c // self.num_heads
        # CPU flash-attention backward parallelises over batch x heads only, so with one or
        # two heads (stages 1-2) it runs on one or two threads (measured 10x slower), and 5
        # heads on 2 threads leave one idle a third of the time. Queries are independent:
        # splitting them into groups folded into the batch, which share k/v, is the same
        # attention with more parallel work; autograd sums the groups' k/v gradients. The
        # forward and the CUDA kernels parallelise well already: CPU training only.
        groups = 1
        if x.requires_grad and x.device.type == 'cpu':
            groups = self._query_groups(b * heads, n, _cpu_threads())
        q = self.q(x).reshape(b * groups, n // groups, heads, head_dims).transpose(1, 2)
        kv = self.kv(self._reduce(x, hw, num_prefix_tokens)).reshape(b, 1, -1, 2, heads, head_dims)
        kv = kv.expand(-1, groups, -1, -1, -1, -1).reshape(b * groups, -1, 2, heads, head_dims)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        # (b * groups, heads, n / groups, d) -> (b, n, c); a view when SDPA's output is
        # laid out (batch, tokens, heads, d), as the CPU and CUDA kernels return it.
        x = x.transpose(1, 2).reshape(b, n, c)
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


class _LinearGeluLinear(torch.autograd.Function):
    """``fc2(gelu(fc1(x)))`` that keeps only ``x`` and the pre-activation for backward.

    Autograd would also keep GELU's output (the input of ``fc2``), a second copy of the
    largest activation of the block; this recomputes it from the pre-activation in
    backward instead (one elementwise op). All tensors share one dtype (the caller casts
    for autocast), so the backward is plain matmuls in that dtype, like autocast's own.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
        hidden = F.linear(x, w1, b1)
        ctx.save_for_backward(x, hidden, w1, w2)
        return F.linear(F.gelu(hidden), w2, b2)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, hidden, w1, w2 = ctx.saved_tensors
        need_x, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad
        grad_out = grad_out.reshape(-1, grad_out.shape[-1])
        hidden = hidden.reshape(-1, hidden.shape[-1])
        grad_w2 = grad_b2 = grad_x = grad_w1 = grad_b1 = None
        if need_w2:
            grad_w2 = grad_out.t() @ F.gelu(hidden)  # the recomputed activation dies here
        if need_b2:
            grad_b2 = grad_out.sum(0)
        if need_x or need_w1 or need_b1:
            grad_hidden = torch.ops.aten.gelu_backward(grad_out @ w2, hidden)
            if need_w1:
                grad_w1 = grad_hidden.t() @ x.reshape(-1, x.shape[-1])
            if need_b1:
                grad_b1 = grad_hidden.sum(0)
            if need_x:
                grad_x = (grad_hidden @ w1).reshape(x.shape)
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2


class FFN(nn.Module):
    """Two-layer MLP with GELU, the Transformer feed-forward block.

    Without autograd (inference, ``torch.no_grad``) the tokens go through in chunks of
    ``chunk_tokens``: the hidden activations are the largest tensors of the whole
    backbone (stage 1 at 800x1333: 66600 tokens x 512 channels, 130 MiB, twice over
    with GELU's output), and chunking bounds them without changing the result, since
    every token is independent. With autograd the full hidden tensor must be kept for
    the backward anyway, so training runs in one piece, through a fused function that
    keeps the pre-activation only and recomputes GELU in backward (stage 1 at 800x1333:
    130 MiB less per layer), unless dropout is active.

    Args:
        embed_dims: Token channels.
        hidden_dims: Hidden channels (``mlp_ratio * embed_dims``).
        drop: Dropout after the activation and after the second layer.
        chunk_tokens: Tokens per chunk without autograd; ``None`` disables chunking.
    """

    def __init__(self, embed_dims: int, hidden_dims: int, drop: float = 0.0,
                 chunk_tokens: Optional[int] = 4096) -> None:
        super().__init__()
        if chunk_tokens is not None and (isinstance(chunk_tokens, bool)
                                         or not isinstance(chunk_tokens, int) or chunk_tokens < 1):
            raise ValueError(f'chunk_tokens must be a positive int or None, got {chunk_tokens!r} '
                             "(PVT's ffn_chunk_tokens); None runs the FFN in one piece.")
        self.chunk_tokens = chunk_tokens
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)

    def _mlp(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))

    def _fused(self, x: Tensor) -> Tensor:
        params = (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        if torch.is_autocast_enabled(x.device.type):
            # Cast as autocast would for linear; the casts are on the tape, so gradients
            # still reach the fp32 parameters and input in their own dtype.
            dtype = torch.get_autocast_dtype(x.device.type)
            with torch.autocast(x.device.type, enabled=False):
                return _LinearGeluLinear.apply(x.to(dtype), *(p.to(dtype) for p in params))
        return _LinearGeluLinear.apply(x, *params)

    def forward(self, x: Tensor) -> Tensor:
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or self.fc1.weight.requires_grad or self.fc2.weight.requires_grad)
        if needs_grad:
            if self.training and self.drop.p > 0:
                return self._mlp(x)  # the dropout mask would need keeping too
            return self._fused(x)
        rows = x.reshape(-1, x.shape[-1])
        if self.chunk_tokens is None or rows.shape[0] <= self.chunk_tokens:
            return self._mlp(x)
        chunks = rows.split(self.chunk_tokens)
        first = self._mlp(chunks[0])  # its dtype is autocast's choice: allocate after it
        out = first.new_empty(rows.shape[0], first.shape[-1])
        out[:first.shape[0]] = first
        start = first.shape[0]
        for chunk in chunks[1:]:
            out[start:start + chunk.shape[0]] = self._mlp(chunk)
            start += chunk.shape[0]
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def extra_repr(self) -> str:
        return f'chunk_tokens={self.chunk_tokens}'


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
                 ffn_chunk_tokens: Optional[int] = 4096) -> None:
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
