"""The kernels that attention and the FFN run: how each strategy computes, never which.

Each function here computes exactly what the plain formulation computes, in the way that
:mod:`pvt_mm.models.ops` chose (query groups, token chunks); nothing here chooses a
strategy (the fused FFN only follows autocast's dtype, as torch's own ops do).

* :func:`grouped_attention`: scaled dot-product attention with each image's queries folded
  into the batch in groups that share the image's keys and values (padded to a multiple of
  the group count; unconditionally while exporting, where the token count is symbolic).
* :func:`linear_gelu_linear`: ``fc2(gelu(fc1(x)))`` through a custom autograd function
  (:class:`_LinearGeluLinear`) that keeps only the input and the pre-activation for
  backward and recomputes GELU there, under autocast as in full precision.
* :func:`run_token_chunks`: a token-wise function over a fixed number of tokens at a time,
  its output allocated once.
"""
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..capabilities import autocast_dtype, is_exporting


def grouped_attention(q: Tensor, k: Tensor, v: Tensor, groups: int,
                      dropout_p: float = 0.0, key_mask: Optional[Tensor] = None) -> Tensor:
    """Scaled dot-product attention with each image's queries split into ``groups``.

    Args:
        q: Queries ``(B, N, heads, d)``.
        k: Keys ``(B, M, heads, d)``.
        v: Values ``(B, M, heads, d)``.
        groups: Query groups (see :func:`attention_query_groups`); queries are padded to a
            multiple of it and the padding is cut from the result.
        dropout_p: Dropout on the attention weights.
        key_mask: ``(B, 1, 1, M)`` bool, True for the keys each image may attend to (a
            padded batch of mixed sizes); ``None`` attends to all. It goes into the same
            fused call as SDPA's ``attn_mask``, repeated for each query group.

    Returns:
        ``(B, N, heads * d)``, identical to ungrouped attention.
    """
    b, n, heads, d = q.shape
    # Exporting, n is symbolic: pad and cut unconditionally (a test on n would pin it).
    exporting = is_exporting()
    if groups > 1:
        pad = -n % groups
        if exporting or pad:
            q = F.pad(q, (0, 0, 0, 0, 0, pad))
        q = q.reshape(b * groups, (n + pad) // groups, heads, d)
        # Every group attends to its image's keys and values: a (small) k/v copy per group.
        m = k.shape[1]
        k = k.unsqueeze(1).expand(b, groups, m, heads, d).reshape(b * groups, m, heads, d)
        v = v.unsqueeze(1).expand(b, groups, m, heads, d).reshape(b * groups, m, heads, d)
        if key_mask is not None:  # each group keeps its image's mask
            key_mask = key_mask.unsqueeze(1).expand(b, groups, *key_mask.shape[1:]).reshape(
                b * groups, *key_mask.shape[1:])
    if exporting and key_mask is not None:
        # ONNX Runtime's Attention wants the mask's query axis spelled out (no broadcast):
        # (B', 1, N', M) bools in the graph, built from the (B', 1, 1, M) key mask.
        key_mask = key_mask.expand(-1, -1, q.shape[1], -1)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=key_mask,
        dropout_p=dropout_p)
    # (B * groups, heads, N', d) -> (B, N', heads * d); a view when the kernel lays its
    # output out as (batch, tokens, heads, d), as the CPU and CUDA kernels do.
    out = out.transpose(1, 2).reshape(b, -1, heads * d)
    if groups > 1 and (exporting or out.shape[1] != n):
        out = out[:, :n]
    return out


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


def linear_gelu_linear(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """``linear(gelu(linear(x, w1, b1)), w2, b2)`` for training, with the lean backward of
    :class:`_LinearGeluLinear`, under autocast as well as in full precision."""
    device = x.device.type
    dtype = autocast_dtype(device)
    if dtype is not None:
        # Cast as autocast would for linear; the casts are on the tape, so gradients still
        # reach the fp32 parameters and input in their own dtype.
        with torch.autocast(device, enabled=False):
            return _LinearGeluLinear.apply(x.to(dtype), w1.to(dtype), b1.to(dtype),
                                           w2.to(dtype), b2.to(dtype))
    return _LinearGeluLinear.apply(x, w1, b1, w2, b2)


def run_token_chunks(fn: Callable[[Tensor], Tensor], x: Tensor,
                     chunk_tokens: Optional[int]) -> Tensor:
    """``fn(x)`` for a token-wise ``fn``, over ``chunk_tokens`` tokens at a time.

    The output is allocated once and filled chunk by chunk, so the peak holds one chunk's
    intermediates, not the whole tensor's. ``None`` runs ``fn`` once.
    """
    rows = x.reshape(-1, x.shape[-1])
    if chunk_tokens is None or rows.shape[0] <= chunk_tokens:
        return fn(x)
    chunks = rows.split(chunk_tokens)
    first = fn(chunks[0])  # its dtype is autocast's choice: allocate after it
    out = first.new_empty(rows.shape[0], first.shape[-1])
    out[:first.shape[0]] = first
    start = first.shape[0]
    for chunk in chunks[1:]:
        out[start:start + chunk.shape[0]] = fn(chunk)
        start += chunk.shape[0]
    return out.reshape(*x.shape[:-1], out.shape[-1])
