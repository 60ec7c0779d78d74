"""Export-time ops: what the FFN and the linear SRA run while a graph is exported, in
place of eager ops whose exported form would freeze the example's size.

* :func:`adaptive_avg_pool2d` (linear SRA). Eager runs torch's kernel. An exported graph
  (ONNX) cannot use it: ONNX has no adaptive pool and the exporter bakes the example's
  kernel size into a fixed ``AveragePool``, wrong at every other input size. While
  exporting, the same averages are two matrix products with pooling matrices built from
  the symbolic height and width, so one file serves any size.
* :func:`run_fixed_chunks` (token-wise FFNs). An exported graph cannot chunk by size (the
  token count is symbolic): it runs a fixed number of pieces, the count chosen by
  :func:`pvt_mm.models.ops.export_ffn_chunks`.
"""
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..capabilities import is_exporting


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
