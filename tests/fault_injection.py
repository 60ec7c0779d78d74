"""Test-only hooks: a DDP worker that dies abruptly (as after an OOM kill or a node fault), a
process killed between a file's write and its rename, RNG-state probes, and a dump of each
rank's weights."""
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


def state_digest(state: dict) -> str:
    """A short digest of RNG states in ``pvt_mm.hooks.rng``'s form (torch CPU and CUDA, numpy,
    python): what a checkpoint's ``rng_state['ranks'][r]`` holds."""
    import hashlib
    digest = hashlib.sha256(state['torch'].cpu().numpy().tobytes())
    for cuda in state.get('cuda') or []:
        digest.update(cuda.cpu().numpy().tobytes())
    digest.update(state['numpy'][1].tobytes())
    py = state['python']
    digest.update(repr((py[0], tuple(py[1]), py[2])).encode())
    return digest.hexdigest()[:16]


def rng_digest() -> str:
    """:func:`state_digest` of this process's RNG states now."""
    from pvt_mm.hooks.rng import _local_rng_state
    return state_digest(_local_rng_state())


@HOOKS.register_module()
class PrintRNGHook(Hook):
    """Print each rank's RNG digest at the end of every epoch (after the checkpoint is saved)
    and when training starts (after a resume has restored the states)."""

    priority = 'LOWEST'

    def before_train(self, runner) -> None:
        print(f'rng rank {runner.rank} before_train: {rng_digest()}', flush=True)

    def after_train_epoch(self, runner) -> None:
        print(f'rng rank {runner.rank} after epoch {runner.epoch + 1}: {rng_digest()}', flush=True)

    def after_val_epoch(self, runner, metrics=None) -> None:
        print(f'rng rank {runner.rank} after val {runner.epoch}: {rng_digest()}', flush=True)


@HOOKS.register_module()
class DumpWeightsHook(Hook):
    """Save this rank's model weights, as they are when training or testing starts (after
    ``init_weights`` / ``load_from``), to ``<work_dir>/weights_rank<R>_<stage>.pth``."""

    priority = 'LOWEST'

    def _dump(self, runner, stage: str) -> None:
        import os.path as osp

        import torch
        from mmengine.model import is_model_wrapper
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        torch.save(model.state_dict(), osp.join(runner.work_dir,
                                                f'weights_rank{runner.rank}_{stage}.pth'))

    def before_train(self, runner) -> None:
        self._dump(runner, 'train')

    def before_test(self, runner) -> None:
        self._dump(runner, 'test')
