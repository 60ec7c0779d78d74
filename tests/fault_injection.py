"""Test-only hooks: a DDP worker that dies abruptly (as after an OOM kill or a node fault), a
process killed between a file's write and its rename, and RNG-state probes."""
import os
import signal

from mmengine.hooks import Hook
from mmdet.registry import HOOKS


@HOOKS.register_module()
class DieOnRankHook(Hook):
    """Kill this process (no cleanup, no exception) on ``rank`` before iteration ``at_iter``."""

    def __init__(self, rank: int = 1, at_iter: int = 3) -> None:
        self.rank, self.at_iter = rank, at_iter

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.rank == self.rank and runner.iter + 1 == self.at_iter:
            print(f'fault injection: rank {self.rank} dies at iteration {self.at_iter}', flush=True)
            os._exit(3)


@HOOKS.register_module()
class KillAtRenameHook(Hook):
    """Log every ``os.replace`` of this process to ``log``, and SIGKILL the process at the
    rename onto a file named ``target``: its data is written, the rename has not happened."""

    def __init__(self, log: str, target: str) -> None:
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            with open(log, 'a') as f:
                f.write(f'{os.fspath(src)} -> {os.fspath(dst)}\n')
            if os.path.basename(os.fspath(dst)) == target:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace


def rng_digest() -> str:
    """A short digest of this process's torch (CPU and CUDA), numpy and python RNG states."""
    import hashlib
    import random

    import numpy as np
    import torch
    digest = hashlib.sha256(torch.get_rng_state().numpy().tobytes())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for state in torch.cuda.get_rng_state_all():
            digest.update(state.numpy().tobytes())
    digest.update(np.random.get_state()[1].tobytes())
    digest.update(repr(random.getstate()).encode())
    return digest.hexdigest()[:16]


@HOOKS.register_module()
class PrintRNGHook(Hook):
    """Print each rank's RNG digest at the end of every epoch (after the checkpoint is saved)
    and when training starts (after a resume has restored the states)."""

    priority = 'LOWEST'

    def before_train(self, runner) -> None:
        print(f'rng rank {runner.rank} before_train: {rng_digest()}', flush=True)

    def after_train_epoch(self, runner) -> None:
        print(f'rng rank {runner.rank} after epoch {runner.epoch + 1}: {rng_digest()}', flush=True)
