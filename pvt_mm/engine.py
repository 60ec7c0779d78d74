"""Training-loop safety for pvt_mm's entry points: nothing lost on interruption, no silent
corruption.

* :func:`use_atomic_checkpoints` makes every local file mmengine writes through its file
  backends (checkpoints included) atomic: temporary file, fsync, rename. With
  :class:`AtomicCheckpointHook` (mmengine's ``CheckpointHook``, which ``tools/train.py``
  swaps in) the ``last_checkpoint`` pointer is written the same way, so a run killed while
  saving never leaves a truncated checkpoint or pointer.
* :func:`find_resumable_checkpoint` picks the newest checkpoint that actually loads, even
  when ``last_checkpoint`` is missing, empty or points at a damaged file.
* :class:`RNGStateHook` stores every rank's torch (CPU and CUDA) / numpy / python RNG states
  in each checkpoint and restores them on ``--resume``, so an interrupted and resumed run
  matches an uninterrupted one.
* :class:`FiniteLossHook` stops training at the first non-finite loss, naming the
  iteration, before a corrupted model can be checkpointed.
"""
import glob
import os
import os.path as osp
import random
import re
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log

from .checkpoint import CheckpointError, read_checkpoint
from .fileio import replaced_atomically


def _atomic_write(data: Union[bytes, str], filepath: Union[str, Path], mode: str,
                  encoding: Optional[str] = None) -> None:
    """Write ``data`` to a temporary file beside ``filepath``, fsync it, then rename it over
    ``filepath``: readers (and a resume after a kill) see the old file or the new one."""
    with replaced_atomically(filepath) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    try:  # make the rename itself durable
        dir_fd = os.open(osp.dirname(osp.abspath(os.fspath(filepath))), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic ``put`` / ``put_text``."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        _atomic_write(obj, filepath, 'wb')

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        _atomic_write(obj, filepath, 'w', encoding=encoding)


def use_atomic_checkpoints() -> None:
    """Route mmengine's local writes (checkpoints included) through :class:`AtomicLocalBackend`.

    mmengine picks a path's backend from its prefix table (``''`` for plain paths), not from
    the name ``local``, so both are replaced; backend instances it cached earlier are dropped.
    """
    from mmengine.fileio import io as mmengine_io
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
    for key, backend in list(mmengine_io.backend_instances.items()):
        if type(backend) is LocalBackend:
            del mmengine_io.backend_instances[key]


class _WorkDirRedirect:
    """A view of the runner whose ``work_dir`` is another directory; everything else is the
    runner's own."""

    def __init__(self, runner, work_dir: str) -> None:
        self.__dict__['_runner'] = runner
        self.__dict__['work_dir'] = work_dir

    def __getattr__(self, name):
        return getattr(self.__dict__['_runner'], name)


class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` whose ``last_checkpoint`` pointer is written atomically.

    ``CheckpointHook`` writes the pointer with a plain ``open()`` into ``runner.work_dir``; here
    it writes into a private directory inside the work dir and the finished file is fsynced
    and renamed over ``work_dir/last_checkpoint``. Checkpoints themselves go through the file
    backend (see :func:`use_atomic_checkpoints`). Takes ``CheckpointHook``'s arguments.
    """

    def _save_checkpoint_with_step(self, runner, step, meta):
        staging = osp.join(runner.work_dir, '.last_checkpoint.staging')
        os.makedirs(staging, exist_ok=True)
        super()._save_checkpoint_with_step(_WorkDirRedirect(runner, staging), step, meta)
        written = osp.join(staging, 'last_checkpoint')
        if osp.isfile(written):  # only the main process writes it
            with open(written) as f:
                _atomic_write(f.read(), osp.join(runner.work_dir, 'last_checkpoint'), 'w')
            os.remove(written)


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


def _local_rng_state() -> dict:
    """This process's RNG states: torch CPU, torch CUDA (every device it owns), numpy, python."""
    state = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_local_rng_state(state: dict) -> Optional[str]:
    """Restore :func:`_local_rng_state`'s states; returns a warning, or ``None``.

    mmengine resumes with ``map_location=get_device()``, so on a GPU host the saved generator
    states arrive as CUDA tensors; torch's setters take CPU byte tensors only.
    """
    torch.set_rng_state(state['torch'].cpu())
    np.random.set_state(state['numpy'])
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))
    cuda = state.get('cuda')
    if cuda is not None:
        if not torch.cuda.is_available():
            return 'the checkpoint has CUDA RNG states but no GPU is visible; they are not restored'
        if len(cuda) != torch.cuda.device_count():
            return (f'the checkpoint has CUDA RNG states for {len(cuda)} devices but this process '
                    f'sees {torch.cuda.device_count()}; they are not restored')
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    return None


def _same_rng_state(a: dict, b: dict) -> bool:
    """Whether two :func:`_local_rng_state` results are the same generator states."""
    if a.keys() != b.keys() or not torch.equal(a['torch'], b['torch']):
        return False
    if a['python'] != b['python']:
        return False
    na, nb = a['numpy'], b['numpy']
    if len(na) != len(nb) or any(not np.array_equal(x, y) for x, y in zip(na, nb)):
        return False
    return all(torch.equal(x, y) for x, y in zip(a.get('cuda', []), b.get('cuda', [])))


class RNGStateHook(Hook):
    """Save every rank's RNG states with each checkpoint and restore them on ``--resume``.

    Each rank's torch CPU and CUDA generators, numpy and python states are saved (gathered to
    the main process in a distributed run, so ``randomness.diff_rank_seed`` streams survive)
    and each rank gets its own back when training resumes. Restoring happens in
    ``before_train`` (after mmengine has re-seeded from the checkpoint's meta), so data order,
    augmentation, dropout and stochastic depth continue exactly where the interrupted run
    stopped. Loading weights with ``load_from`` (fine-tuning) restores nothing: the configured
    seed's streams stay. Bit-identical results also need ``num_workers=0`` or non-persistent
    workers (worker processes are re-seeded).

    Gathering: only the main process saves (mmengine's ``Runner.save_checkpoint`` is
    ``master_only``), so the other ranks cannot be asked at that moment. Instead every rank
    joins an ``all_gather`` at each point where a saver can run: the end of every training
    iteration, training epoch and validation epoch (this hook's priority is above
    ``CheckpointHook``'s, so the snapshot precedes the save; about 12 KB per rank). When rank 0
    saves, its live state is compared with its part of the last snapshot: equal means no
    generator moved since, so the snapshot is every rank's state now, whatever triggered the
    save (interval, ``save_best``, last epoch, iteration-based loops, another saver). A save
    from anywhere else (the states moved since the snapshot) keeps rank 0's state and says
    that the others are missing.
    """

    # After mmengine's own hooks in before_train; before CheckpointHook (VERY_LOW) at the
    # end of an iteration, epoch or validation, so the snapshot precedes the save.
    priority = 'LOW'

    def __init__(self) -> None:
        self._pending = None
        self._snapshot = None

    def _take_snapshot(self) -> None:
        """Every rank's current state, on every rank (a collective: all ranks call it)."""
        from mmengine.dist import all_gather_object, get_world_size
        if get_world_size() > 1:
            self._snapshot = all_gather_object(_local_rng_state())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._take_snapshot()

    def after_train_epoch(self, runner) -> None:
        self._take_snapshot()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._take_snapshot()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        from mmengine.dist import get_rank, get_world_size
        own = _local_rng_state()
        if get_world_size() == 1:
            ranks = [own]
        elif self._snapshot is not None and _same_rng_state(self._snapshot[get_rank()], own):
            ranks = self._snapshot
        else:
            runner.logger.warning(
                'Checkpoint saved away from an iteration, epoch or validation end: only this '
                "rank's RNG state is stored, so a resume from it restarts the other ranks' "
                'random streams from the seed.')
            ranks = [None] * get_world_size()
            ranks[get_rank()] = own
        checkpoint['rng_state'] = dict(ranks=ranks)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta') or {}
        self._pending = (meta.get('iter'), checkpoint.get('rng_state'))

    def before_train(self, runner) -> None:
        if self._pending is None:
            return
        (saved_iter, state), self._pending = self._pending, None
        # Runner.resume sets the loop's iteration from the checkpoint; load_from leaves it at 0.
        if not saved_iter or runner.iter != saved_iter:
            runner.logger.info('Weights loaded with load_from: the RNG states are the configured '
                               "seed's, not the checkpoint's.")
            return
        if state is None:
            runner.logger.warning('The resumed checkpoint has no RNG states (saved without '
                                  'RNGStateHook): random streams restart from the seed.')
            return
        from mmengine.dist import get_rank, get_world_size
        ranks = state.get('ranks', [state])  # older pvt_mm checkpoints: one CPU-only state
        rank, world_size = get_rank(), get_world_size()
        if len(ranks) != world_size or ranks[rank] is None:
            runner.logger.warning(
                f'The checkpoint has RNG states for {len(ranks)} process(es) but this run has '
                f'{world_size} (or none for rank {rank}); random streams restart from the seed.')
            return
        problem = _set_local_rng_state(ranks[rank])
        if problem:
            runner.logger.warning(f'RNG state of rank {rank}: {problem}.')
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
    :class:`pvt_mm.models.input_checks.FiniteInputCheck`); without this hook the checks of the last
    batches of a run would never be read.
    """

    priority = 'HIGHEST'

    def _finish(self, runner) -> None:
        from .models.input_checks import finish_input_checks
        finish_input_checks(runner.model)

    def after_train_epoch(self, runner) -> None:
        self._finish(runner)

    def after_train(self, runner) -> None:  # iteration-based loops end without an epoch
        self._finish(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._finish(runner)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._finish(runner)


__all__ = ['AtomicLocalBackend', 'AtomicCheckpointHook', 'use_atomic_checkpoints', 'find_resumable_checkpoint',
           'RNGStateHook', 'FiniteLossHook', 'FiniteInputHook']
