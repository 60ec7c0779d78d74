"""Scheduling decisions: how attention and the FFN run on a device, decided in one place.

The layers in :mod:`pvt_mm.models.layers` hold the maths; the kernels in
:mod:`pvt_mm.models.kernels` and :mod:`pvt_mm.models.export_ops` run it. Every decision about
*how* it runs -- how many query groups the attention gets, whether and in how many tokens or
pieces the FFN is chunked -- is made here, from the device, the dtype and the shapes. The
choices are pure functions of those (plus the device's thread or SM count, read once), so
they are tested on any machine and never change a result: every strategy computes the same
numbers as the plain formulation.

Decisions:

* **Query groups** (:func:`attention_query_groups`; training only). The fused attention
  backward kernels parallelise over batch x heads (CPU flash attention) or batch x heads x
  key blocks (CUDA flash and memory-efficient kernels). Spatial-reduction attention has one
  or two heads and about a thousand keys in stages 1-2, so a training step leaves most
  threads / SMs idle. Queries are independent: folding groups of them into the batch, all
  sharing the same keys and values, is the same attention with more parallel work
  (autograd sums the groups' key and value gradients). The forward kernels parallelise over
  query blocks already, so inference runs ungrouped -- except in an exported graph: ONNX
  Runtime's CPU kernel of ONNX ``Attention`` parallelises its forward over batch x heads
  only, so stage 1's single head ran on one thread (2x slower than PyTorch's at 800x1333).
  While exporting, queries are folded into enough groups that batch x heads x groups
  reaches :data:`EXPORT_ATTENTION_WORK` at batch 1 (the group count is static, the token
  count symbolic: the queries are padded to a multiple of it in the graph).
* **FFN token chunks** (:func:`ffn_chunk_tokens`; no autograd, token-wise FFNs only: PVT
  v2's depth-wise conv mixes neighbouring tokens, so its FFN runs in one piece). On CPU the
  FFN's hidden activations are the largest tensors of the backbone; running the tokens in
  chunks bounds them at no cost in speed. On a GPU small chunks starve the matmuls, so
  chunking runs there only when a user asks for it with an explicit chunk size. An exported
  graph cannot chunk by size (the token count is symbolic): it cuts each token-wise FFN into
  a fixed number of pieces per stage (:func:`export_ffn_chunks`), padded to a multiple of it.
"""
import functools
from typing import Optional, Union

import torch

from ..capabilities import is_exporting

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


# --------------------------------------------------------------------------- FFN
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
