"""Timing and numerics helpers shared by the benchmark tools (``tools/analysis/``)."""
import contextlib
import time
from typing import Callable, Iterator, Union

import torch


def is_cuda(device: Union[str, torch.device]) -> bool:
    """Whether ``device`` (``'cuda'``, ``'cuda:1'``, a ``torch.device``...) is a CUDA device."""
    return torch.device(device).type == 'cuda'


def timed_call(fn: Callable[[], None], device: Union[str, torch.device]) -> float:
    """Seconds one call of ``fn`` takes.

    On CUDA: GPU time between two CUDA events recorded around the call (the host waits
    once, after the call, to read them). On CPU: the wall clock.

    Args:
        fn: The call to time.
        device: ``'cpu'``, ``'cuda'`` or ``'cuda:N'`` (the device ``fn`` runs on).
    """
    if is_cuda(device):
        with torch.cuda.device(torch.device(device)):  # events and sync on that GPU
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            end.synchronize()
        return start.elapsed_time(end) / 1e3
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and cuBLAS matmuls (restored afterwards).

    On Ampere and newer GPUs torch runs fp32 convolutions in TF32 (10-bit mantissa) by
    default, so two fp32 implementations of one model can differ by ~1e-4; equivalence
    checks run inside this context.
    """
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
