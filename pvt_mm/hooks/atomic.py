"""Atomic training output: every local file mmengine writes (checkpoints included) and the
``last_checkpoint`` pointer appear whole or not at all, so a run killed while saving never
leaves a truncated checkpoint or pointer.

* :func:`use_atomic_checkpoints` makes every local file mmengine writes through its file
  backends atomic: temporary file, fsync, rename.
* :class:`AtomicCheckpointHook` (mmengine's ``CheckpointHook``, which ``tools/train.py``
  swaps in) writes the ``last_checkpoint`` pointer the same way.
"""
import os
import os.path as osp
from pathlib import Path
from typing import Optional, Union

from mmengine.fileio import LocalBackend, register_backend

from ..adapters import CheckpointHookWithPointerDir, drop_cached_file_backends
from ..fileio import replaced_atomically


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
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
    drop_cached_file_backends(LocalBackend)


class AtomicCheckpointHook(CheckpointHookWithPointerDir):
    """mmengine's ``CheckpointHook`` whose ``last_checkpoint`` pointer is written atomically.

    ``CheckpointHook`` writes the pointer with a plain ``open()`` into ``runner.work_dir``; here
    it writes into a private directory inside the work dir and the finished file is fsynced
    and renamed over ``work_dir/last_checkpoint``. Checkpoints themselves go through the file
    backend (see :func:`use_atomic_checkpoints`). Takes ``CheckpointHook``'s arguments.
    """

    def pointer_dir(self, runner) -> str:
        staging = osp.join(runner.work_dir, '.last_checkpoint.staging')
        os.makedirs(staging, exist_ok=True)
        return staging

    def pointer_written(self, runner, written: str) -> None:
        with open(written) as f:
            _atomic_write(f.read(), osp.join(runner.work_dir, 'last_checkpoint'), 'w')
        os.remove(written)


__all__ = ['AtomicLocalBackend', 'AtomicCheckpointHook', 'use_atomic_checkpoints']
