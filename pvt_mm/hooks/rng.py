"""Exact resume of random streams: :class:`RNGStateHook` stores every rank's torch (CPU and
CUDA) / numpy / python RNG states in each checkpoint and restores them on ``--resume``, so
an interrupted and resumed run matches an uninterrupted one."""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook


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


__all__ = ['RNGStateHook']
