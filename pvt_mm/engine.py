"""Training-loop safety for pvt_mm's entry points: nothing lost on interruption, no silent
corruption.

* :class:`AtomicLocalBackend` makes every local checkpoint write atomic (temporary file,
  fsync, rename), so a run killed while saving never leaves a truncated checkpoint.
* :func:`find_resumable_checkpoint` picks the newest checkpoint that actually loads, even
  when ``last_checkpoint`` is missing, empty or points at a damaged file.
* :class:`RNGStateHook` stores the torch / numpy / python RNG states in every checkpoint and
  restores them on resume, so an interrupted and resumed run matches an uninterrupted one.
* :class:`FiniteLossHook` stops training at the first non-finite loss, naming the
  iteration, before a corrupted model can be checkpointed.
"""
import glob
import os
import os.path as osp
import random
import re
import tempfile
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.logging import print_log

from .checkpoint import CheckpointError, read_checkpoint


def _atomic_write(data: Union[bytes, str], filepath: Union[str, Path], mode: str,
                  encoding: Optional[str] = None) -> None:
    filepath = os.fspath(filepath)
    directory = osp.dirname(osp.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(filepath)}.', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)  # atomic on POSIX: readers see the old or the new file
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic ``put`` / ``put_text``."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        _atomic_write(obj, filepath, 'wb')

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        _atomic_write(obj, filepath, 'w', encoding=encoding)


def use_atomic_checkpoints() -> None:
    """Route mmengine's local writes (checkpoints included) through :class:`AtomicLocalBackend`."""
    register_backend('local', AtomicLocalBackend, force=True)


def _checkpoint_step(path: str) -> int:
    match = re.search(r'(?:epoch|iter)_(\d+)\.pth$', path)
    return int(match[1]) if match else -1


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The newest checkpoint in ``work_dir`` that loads, or ``None`` if there is none.

    ``last_checkpoint`` is tried first; a missing, empty or damaged target is reported and
    the newest loadable ``epoch_*.pth`` / ``iter_*.pth`` is used instead.
    """
    candidates = []
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named:
            candidates.append(named if osp.isabs(named) else osp.join(work_dir, osp.basename(named)))
    found = glob.glob(osp.join(work_dir, 'epoch_*.pth')) + glob.glob(osp.join(work_dir, 'iter_*.pth'))
    candidates += sorted(found, key=_checkpoint_step, reverse=True)
    seen = set()
    for path in candidates:
        if path in seen:
            continue
        seen.add(path)
        try:
            ckpt = read_checkpoint(path)
        except (FileNotFoundError, CheckpointError) as exc:
            print_log(f'Skipping checkpoint {path}: {exc}', logger='current', level=30)
            continue
        if 'meta' in ckpt and 'state_dict' in ckpt:
            return path
        print_log(f'Skipping {path}: not a training checkpoint (no meta/state_dict).',
                  logger='current', level=30)
    return None


class RNGStateHook(Hook):
    """Save the RNG states with each checkpoint and restore them when resuming.

    Restoring happens in ``before_train`` (after mmengine has re-seeded from the
    checkpoint's meta), so the data order, augmentation and stochastic depth of a resumed
    run continue exactly where the interrupted run stopped. Bit-identical results also
    need ``num_workers=0`` or non-persistent workers (worker processes are re-seeded).
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._pending = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(),
                                       python=random.getstate())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending = checkpoint.get('rng_state')

    def before_train(self, runner) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state['torch'])
        np.random.set_state(state['numpy'])
        py = state['python']
        random.setstate((py[0], tuple(py[1]), py[2]))
        runner.logger.info('Restored the RNG states saved with the resumed checkpoint.')


class FiniteLossHook(Hook):
    """Stop training at the first NaN/Inf loss, naming the iteration and epoch.

    Runs before the checkpoint hook, so the last checkpoint on disk is never one with
    corrupted weights.
    """

    priority = 'HIGHEST'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs or 'loss' not in outputs:
            return
        loss = outputs['loss']
        if isinstance(loss, torch.Tensor) and not torch.isfinite(loss).all():
            parts = ', '.join(f'{k}={float(v.detach().float().mean()):.4g}' for k, v in outputs.items()
                              if isinstance(v, torch.Tensor) and v.numel())
            raise FloatingPointError(
                f'Loss is {float(loss)} at iteration {runner.iter + 1} (epoch {runner.epoch + 1}); '
                f'training stopped so no corrupted checkpoint is saved. Losses: {parts}. Lower the '
                'learning rate, enable gradient clipping (optim_wrapper.clip_grad), check the data, '
                'then resume from the last checkpoint with --resume.')


class FiniteInputHook(Hook):
    """Read the input checks still in flight when a train, val or test run ends.

    On CUDA PVT's NaN/Inf input check is read a few calls late (no host sync, see
    :class:`pvt_mm.models.ops.FiniteInputCheck`); without this hook the checks of the last
    batches of a run would never be read.
    """

    priority = 'HIGHEST'

    def _finish(self, runner) -> None:
        from .models.ops import finish_input_checks
        finish_input_checks(runner.model)

    def after_train_epoch(self, runner) -> None:
        self._finish(runner)

    def after_train(self, runner) -> None:  # iteration-based loops end without an epoch
        self._finish(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._finish(runner)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._finish(runner)


__all__ = ['AtomicLocalBackend', 'use_atomic_checkpoints', 'find_resumable_checkpoint',
           'RNGStateHook', 'FiniteLossHook', 'FiniteInputHook']
