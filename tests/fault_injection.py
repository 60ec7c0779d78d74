"""Test-only hook: one DDP worker dies abruptly, as after an OOM kill or a node fault."""
import os

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
