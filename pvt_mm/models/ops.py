"""How attention and the FFN run on a device: the one place for scheduling choices.

The layers in :mod:`pvt_mm.models.layers` hold the maths only; every decision about *how*
that maths runs -- how many query groups the attention backward gets, whether the FFN runs
in token chunks, how the input NaN/Inf check avoids a host sync -- is made here, from the
device, the dtype and the shapes. The choices are pure functions of those (plus the
device's thread or SM count, read once), so they are tested on any machine and never
change a result: every strategy computes the same numbers as the plain formulation.

Strategies:

* **Query groups** (training only). The fused attention backward kernels parallelise over
  batch x heads (CPU flash attention) or batch x heads x key blocks (CUDA flash and
  memory-efficient kernels). Spatial-reduction attention has one or two heads and about a
  thousand keys in stages 1-2, so a training step leaves most threads / SMs idle. Queries
  are independent: folding groups of them into the batch, all sharing the same keys and
  values, is the same attention with more parallel work (autograd sums the groups' key and
  value gradients). The forward kernels parallelise over query blocks already, so
  inference runs ungrouped -- except in an exported graph: ONNX Runtime's CPU kernel of
  ONNX ``Attention`` parallelises its forward over batch x heads only, so stage 1's single
  head ran on one thread (2x slower than PyTorch's at 800x1333). While exporting, queries
  are folded into enough groups that batch x heads x groups reaches
  :data:`EXPORT_ATTENTION_WORK` at batch 1 (the group count is static, the token count
  symbolic: the queries are padded to a multiple of it in the graph).
* **FFN token chunks** (no autograd, token-wise FFNs only: PVT v2's depth-wise conv mixes
  neighbouring tokens, so its FFN runs in one piece). On CPU the FFN's hidden activations are the
  largest tensors of the backbone; running the tokens in chunks bounds them at no cost in
  speed. On a GPU small chunks starve the matmuls, so chunking runs there only when a user
  asks for it with an explicit chunk size. An exported graph cannot chunk by size (the token
  count is symbolic): it cuts each token-wise FFN into a fixed number of pieces per stage
  (:func:`export_ffn_chunks`), padded to a multiple of it.
* **Adaptive average pooling** (linear SRA). Eager runs torch's kernel. An exported graph
  (ONNX) cannot use it: ONNX has no adaptive pool and the exporter bakes the example's
  kernel size into a fixed ``AveragePool``, wrong at every other input size. While
  exporting, the same averages are two matrix products with pooling matrices built from
  the symbolic height and width, so one file serves any size.
* **Finite-input check.** On CPU the check raises at once. On CUDA reading the result would
  stall the host every call, so the flag is copied to pinned memory asynchronously and
  read once the GPU has got there, a few calls later at most.
"""
import collections
import functools
from typing import Callable, Deque, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..capabilities import autocast_dtype, is_compiling, is_exporting

#: ``ffn_chunk_tokens='auto'``: chunk size used where chunking pays (CPU inference).
AUTO_FFN_CHUNK_TOKENS = 4096
#: Exported graphs: FFN chunks of stage 1 (each later stage has a quarter of the tokens and
#: a quarter of the chunks): 800x1333 gives ~4,200-token chunks in stages 1-3, like eager's.
EXPORT_FFN_STAGE1_CHUNKS = 16
#: Most query groups ever used; beyond this the k/v copies outweigh the gain.
MAX_QUERY_GROUPS = 64
#: Keys per block of the CUDA attention backward kernels (FlashAttention-2 and the
#: memory-efficient kernel parallelise their backward over blocks of 64-128 keys).
CUDA_KEY_BLOCK = 128
#: Fewest queries per group on CUDA: below this a group no longer fills one query tile.
CUDA_MIN_GROUP_QUERIES = 128
#: Exported graphs: heads x query groups per image, enough work items for a 16-thread CPU.
EXPORT_ATTENTION_WORK = 16

FFNChunkSetting = Union[None, int, str]


# --------------------------------------------------------------------------- device facts
@torch.compiler.assume_constant_result
def cpu_threads() -> int:
    """``torch.get_num_threads()``, a constant to torch.compile (no graph break)."""
    return torch.get_num_threads()


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@torch.compiler.assume_constant_result
def cuda_sm_count(index: int) -> int:
    """Streaming multiprocessors of CUDA device ``index`` (read once, then cached)."""
    return _sm_count(index)


# --------------------------------------------------------------------------- attention
def cpu_query_groups(parallel_heads: int, num_queries: int, threads: int) -> int:
    """Query groups for a CPU training step: keep every thread busy, evenly.

    Doubles the groups until the ``parallel_heads * groups`` work items give at least two
    per thread and the busiest thread at most 10 % above the mean, as far as
    ``num_queries`` splits evenly (no padding on CPU, where it would cost a copy).
    """
    groups = 1
    while groups < MAX_QUERY_GROUPS and num_queries % (2 * groups) == 0:
        items = parallel_heads * groups
        busiest = -(-items // threads) * threads  # items rounded up to a multiple
        if items >= 2 * threads and busiest <= 1.1 * items:
            break
        groups *= 2
    return groups


def cuda_query_groups(parallel_heads: int, num_queries: int, num_keys: int, sms: int) -> int:
    """Query groups for a CUDA training step: about two waves of backward blocks.

    The backward launches ``parallel_heads * groups * ceil(num_keys / CUDA_KEY_BLOCK)``
    blocks; groups double until that fills every SM twice, while each group keeps at least
    :data:`CUDA_MIN_GROUP_QUERIES` queries. PVT-Small at 800x1333, batch 1: stage 1
    (1 head, 66600 queries, 1025 keys, 132 SMs) gets 32 groups.
    """
    key_blocks = -(-num_keys // CUDA_KEY_BLOCK)
    groups = 1
    while (parallel_heads * groups * key_blocks < 2 * sms and groups < MAX_QUERY_GROUPS
           and num_queries // (2 * groups) >= CUDA_MIN_GROUP_QUERIES):
        groups *= 2
    return groups


def attention_query_groups(device: torch.device, dtype: torch.dtype, batch: int, heads: int,
                           num_queries: int, num_keys: int, needs_grad: bool) -> int:
    """How many groups each head's queries are split into, from device, dtype and shape.

    Args:
        device: Device of the attention inputs.
        dtype: Dtype the attention runs in (after autocast). Both devices' backward kernels
            parallelise the same way in fp32, fp16 and bf16, so it does not change the
            choice today; it is part of the decision's inputs for kernels where it would.
        batch: Batch size.
        heads: Attention heads.
        num_queries: Query tokens per image.
        num_keys: Key/value tokens per image (after spatial reduction).
        needs_grad: Whether a backward will run (the only case that is split).

    Returns:
        The number of groups; 1 runs the attention as one call.
    """
    del dtype  # see Args
    if is_exporting():
        return max(1, EXPORT_ATTENTION_WORK // heads)
    if not needs_grad:
        return 1
    if device.type == 'cpu':
        return cpu_query_groups(batch * heads, num_queries, cpu_threads())
    if device.type == 'cuda':
        index = device.index if device.index is not None else torch.cuda.current_device()
        return cuda_query_groups(batch * heads, num_queries, num_keys, cuda_sm_count(index))
    return 1


def grouped_attention(q: Tensor, k: Tensor, v: Tensor, groups: int,
                      dropout_p: float = 0.0) -> Tensor:
    """Scaled dot-product attention with each image's queries split into ``groups``.

    Args:
        q: Queries ``(B, N, heads, d)``.
        k: Keys ``(B, M, heads, d)``.
        v: Values ``(B, M, heads, d)``.
        groups: Query groups (see :func:`attention_query_groups`); queries are padded to a
            multiple of it and the padding is cut from the result.
        dropout_p: Dropout on the attention weights.

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
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=dropout_p)
    # (B * groups, heads, N', d) -> (B, N', heads * d); a view when the kernel lays its
    # output out as (batch, tokens, heads, d), as the CPU and CUDA kernels do.
    out = out.transpose(1, 2).reshape(b, -1, heads * d)
    if groups > 1 and (exporting or out.shape[1] != n):
        out = out[:, :n]
    return out


# --------------------------------------------------------------------------- FFN
def _pooling_matrix(size, out: int, like: Tensor) -> Tensor:
    """``(out, size)``: row ``i`` averages the cells ``[floor(i*size/out), ceil((i+1)*size/out))``,
    the windows of :func:`torch.nn.functional.adaptive_avg_pool2d`."""
    idx = torch.arange(out, device=like.device)
    start = torch.div(idx * size, out, rounding_mode='floor')
    end = torch.div((idx + 1) * size + out - 1, out, rounding_mode='floor')
    cells = torch.arange(size, device=like.device)
    inside = (cells[None] >= start[:, None]) & (cells[None] < end[:, None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


def adaptive_avg_pool2d(x: Tensor, size: int) -> Tensor:
    """:func:`torch.nn.functional.adaptive_avg_pool2d` to ``size x size``; while exporting,
    as products with pooling matrices of the symbolic grid (see the module docstring)."""
    if not is_exporting():
        return F.adaptive_avg_pool2d(x, size)
    rows = _pooling_matrix(x.shape[-2], size, x)
    cols = _pooling_matrix(x.shape[-1], size, x)
    return rows @ x @ cols.transpose(0, 1)


def check_ffn_chunk_setting(setting: FFNChunkSetting) -> FFNChunkSetting:
    """Validate PVT's ``ffn_chunk_tokens``: ``'auto'``, ``None`` or a positive int."""
    if setting is None or setting == 'auto':
        return setting
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ValueError(f"chunk_tokens must be a positive int or None (or 'auto'), got {setting!r} "
                         "(PVT's ffn_chunk_tokens); 'auto' chunks where it pays (CPU "
                         'inference), None runs the FFN in one piece.')
    return setting


def ffn_chunk_tokens(device: torch.device, dtype: torch.dtype, num_tokens: int,
                     needs_grad: bool, setting: FFNChunkSetting = 'auto',
                     token_wise: bool = True) -> Optional[int]:
    """Tokens per FFN chunk for this call, or ``None`` for one piece.

    Args:
        device: Device of the tokens.
        dtype: Dtype of the tokens (does not change the choice today).
        num_tokens: Tokens in the call (batch x sequence).
        needs_grad: Whether autograd records the call; the backward needs the whole hidden
            tensor anyway, so training never chunks.
        setting: PVT's ``ffn_chunk_tokens``: ``'auto'`` chunks on CPU only (on a GPU small
            chunks starve the matmuls: measured up to 3.9x slower on an H100), an int
            chunks on every device (a user asking for low memory), ``None`` never.
        token_wise: Whether the FFN computes every token independently. PVT v2's FFN
            mixes neighbouring tokens with a depth-wise conv, so splitting its tokens would
            change the result: such an FFN always runs in one piece.
    """
    del dtype
    if needs_grad or setting is None or not token_wise:
        return None
    if setting == 'auto':
        setting = AUTO_FFN_CHUNK_TOKENS if device.type == 'cpu' else None
    return setting if setting is not None and num_tokens > setting else None


def export_ffn_chunks(stage_index: int) -> int:
    """How many pieces an exported graph cuts a token-wise FFN of stage ``stage_index``
    (0-based) into: :data:`EXPORT_FFN_STAGE1_CHUNKS` in stage 1, a quarter per later stage
    (its token count shrinks 4x), at least 1. A count, not a size: the token count is
    symbolic in the graph, the number of pieces has to be static."""
    return max(1, EXPORT_FFN_STAGE1_CHUNKS // 4 ** stage_index)


def run_fixed_chunks(fn: Callable[[Tensor], Tensor], x: Tensor, chunks: int) -> Tensor:
    """``fn(x)`` for a token-wise ``fn``, in ``chunks`` pieces of equal, symbolic size: the
    exportable form of :func:`run_token_chunks`. The tokens are padded to a multiple of
    ``chunks`` (unconditionally: a test on the symbolic count would pin it), each piece runs
    as its own ops in the graph, and the padding is cut off. An engine that runs the nodes
    in order then keeps one piece's hidden activations at a time, in cache at large inputs
    where one piece would not fit."""
    rows = x.reshape(-1, x.shape[-1])
    n = rows.shape[0]
    rows = F.pad(rows, (0, 0, 0, -n % chunks))
    pieces = rows.reshape(chunks, -1, rows.shape[-1]).unbind(0)
    out = torch.cat([fn(piece) for piece in pieces])[:n]
    return out.reshape(*x.shape[:-1], out.shape[-1])


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


# --------------------------------------------------------------------------- input check
class FiniteInputCheck:
    """Raise on NaN/Inf inputs without a host synchronisation on CUDA.

    CPU inputs are checked at once. On CUDA the check's flag is copied to pinned host
    memory without blocking and read when its event has completed (polled at the next
    calls), so a non-finite batch is reported a few calls later at most, never by stalling
    the GPU pipeline; the error names the call that carried it. :meth:`finish` reads the
    checks still in flight at the end of a run (:class:`pvt_mm.engine.FiniteInputHook`
    calls it after every train, val and test run). Skipped while torch.compile traces (a
    data-dependent branch would break the graph).

    Args:
        message: The error message (what is wrong and what to check).
        max_pending: Most CUDA checks kept in flight; older ones are awaited first.
    """

    def __init__(self, message: str, max_pending: int = 8) -> None:
        self.message = message
        self.max_pending = max_pending
        self.calls = 0  # CUDA inputs checked so far (numbers the calls in the error)
        self._pending: Deque[Tuple['torch.cuda.Event', Tensor, int]] = collections.deque()

    def __call__(self, x: Tensor) -> None:
        if is_compiling():
            return
        if x.device.type != 'cuda':
            if not torch.isfinite(x).all():
                raise ValueError(self.message)
            return
        # Earlier calls' flags are read before this input is queued: an error raised here
        # is about one of them, never about ``x``.
        self.poll()
        if len(self._pending) >= self.max_pending:
            self.poll(wait=True)
        self.calls += 1
        flag = torch.empty((), dtype=torch.bool, pin_memory=True)
        flag.copy_(torch.isfinite(x).all(), non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(x.device))  # the stream the copy went to
        self._pending.append((event, flag, self.calls))

    @property
    def pending(self) -> int:
        """CUDA checks queued and not read yet."""
        return len(self._pending)

    def poll(self, wait: bool = False) -> None:
        """Read the flags of finished checks (all of them, waiting, if ``wait``).

        Raises:
            ValueError: a checked input held NaN or Inf; says which call it came from.
        """
        while self._pending and (wait or self._pending[0][0].query()):
            event, flag, call = self._pending.popleft()
            event.synchronize()
            if not bool(flag):
                self._pending.clear()
                # ``call`` numbers the inputs queued so far; the input of the call that raises
                # (if any) is not queued yet, so it is never the one meant.
                raise ValueError(f'{self.message} (detected asynchronously on the GPU: the '
                                 f'offending batch is the input of call {call} of the '
                                 f'{self.calls} checked so far)')

    def finish(self) -> None:
        """Wait for and read every check still in flight (the end of a run).

        Raises:
            ValueError: as :meth:`poll`.
        """
        self.poll(wait=True)


def finish_input_checks(model: torch.nn.Module) -> int:
    """Read the pending :class:`FiniteInputCheck` flags of every module of ``model``.

    Args:
        model: Any model (wrapped or not); modules without checks are skipped.

    Returns:
        How many checks held pending flags (read now).

    Raises:
        ValueError: one of them saw a non-finite input.
    """
    found = 0
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, FiniteInputCheck) and value.pending:
                found += 1
                value.finish()
    return found
