"""Training-loop safety hooks for pvt_mm's entry points (nothing lost on interruption, no
silent corruption), one job per module; registered under these type names by
:mod:`pvt_mm.registry`.

* :mod:`.atomic`: atomic checkpoint and ``last_checkpoint`` writes;
* :mod:`.resume`: which checkpoint ``--resume`` continues from;
* :mod:`.rng`: every rank's RNG states saved and restored;
* :mod:`.finite`: non-finite losses and inputs;
* :mod:`.batch_invariance`: results independent of the batch (valid sizes, masked neck / heads).
"""
from .atomic import AtomicCheckpointHook, AtomicLocalBackend, use_atomic_checkpoints
from .batch_invariance import BatchInvariantHook
from .finite import FiniteInputHook, FiniteLossHook
from .resume import find_resumable_checkpoint
from .rng import RNGStateHook

__all__ = ['AtomicLocalBackend', 'AtomicCheckpointHook', 'use_atomic_checkpoints',
           'find_resumable_checkpoint', 'RNGStateHook', 'FiniteLossHook', 'FiniteInputHook',
           'BatchInvariantHook']
