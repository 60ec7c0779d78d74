"""Timing and numerics helpers shared by the benchmark tools (``tools/analysis/``)."""
import contextlib
import platform
import time
from typing import Callable, Dict, Iterator, List, Union

import torch


def machine_line() -> str:
    """The CPU (``/proc/cpuinfo``'s model name), torch's thread count and version, for the
    first line of a benchmark's output."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return f'{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, fp32'


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


def interleaved(calls: Dict[str, Callable[[], None]], warmup: int, repeat: int,
                device: Union[str, torch.device]) -> Dict[str, List[float]]:
    """Seconds per call of each of ``calls``, timed round-robin.

    Every round calls each once, the order rotated by one each round, so that machine noise
    (another process, frequency changes) hits all of them alike; the first ``warmup`` rounds
    are not kept.

    Args:
        calls: Name -> the call to time.
        warmup: Untimed rounds first.
        repeat: Timed rounds.
        device: Where the calls run (see :func:`timed_call`).
    """
    names = list(calls)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(warmup + repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds = timed_call(calls[name], device)
            if r >= warmup:
                times[name].append(seconds)
    return times


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
