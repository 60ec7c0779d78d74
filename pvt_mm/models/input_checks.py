"""The NaN / Inf check of a model's input, without a host synchronisation on CUDA.

On CPU the check raises at once. On CUDA reading the result would stall the host every
call, so the flag is copied to pinned memory asynchronously and read once the GPU has got
there, a few calls later at most; :func:`finish_input_checks` reads the flags still in
flight at the end of a run.
"""
import collections
from typing import Deque, Tuple

import torch
from torch import Tensor

from ..capabilities import is_compiling


class FiniteInputCheck:
    """Raise on NaN/Inf inputs without a host synchronisation on CUDA.

    CPU inputs are checked at once. On CUDA the check's flag is copied to pinned host
    memory without blocking and read when its event has completed (polled at the next
    calls), so a non-finite batch is reported a few calls later at most, never by stalling
    the GPU pipeline; the error names the call that carried it. :meth:`finish` reads the
    checks still in flight at the end of a run (:class:`pvt_mm.hooks.FiniteInputHook`
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
