"""The places pvt_mm must touch another library's internals, each because no public API
does the job; checked against mmengine 0.10.7 (the pinned and the oldest stack), and
guarded by tests/test_adapters.py, which fails first when an upgrade moves one of them.

Everything else in pvt_mm uses the public APIs of mmengine / mmdet / mmseg / mmpretrain.

* :class:`CheckpointHookWithPointerDir`: ``CheckpointHook`` writes the ``last_checkpoint``
  pointer with a plain ``open()`` inside its private ``_save_checkpoint_with_step``; no hook
  point or argument lets another writer do it, so pvt_mm overrides that method.
* :func:`drop_cached_file_backends`: ``register_backend(force=True)`` replaces a backend
  class but not the instances ``get_file_backend`` cached already (the module-level
  ``mmengine.fileio.io.backend_instances``); there is no public way to clear them.
* :func:`compile_runner_method`: ``Runner`` compiles only ``train_step`` (in ``train()``),
  with the private ``Runner._maybe_compile``; calling it for ``test_step`` keeps mmengine's
  own reading of the config's ``compile`` options.
* :func:`to_cpu`: ``mmengine.evaluator.metric._to_cpu``, what mmengine's own metrics use to
  move predictions (tensors and data elements, nested) to the CPU.
"""
import os.path as osp
from typing import Any

from mmengine.hooks import CheckpointHook


class _WorkDirRedirect:
    """A view of the runner whose ``work_dir`` is another directory; everything else is the
    runner's own."""

    def __init__(self, runner, work_dir: str) -> None:
        self.__dict__['_runner'] = runner
        self.__dict__['work_dir'] = work_dir

    def __getattr__(self, name):
        return getattr(self.__dict__['_runner'], name)


class CheckpointHookWithPointerDir(CheckpointHook):
    """mmengine's ``CheckpointHook``, with its ``last_checkpoint`` pointer written into
    :meth:`pointer_dir` and then handed to :meth:`pointer_written`.

    ``CheckpointHook._save_checkpoint_with_step`` (mmengine 0.10.7) saves through
    ``runner.save_checkpoint`` (into ``out_dir``, ``runner.work_dir`` by default) and then
    writes ``runner.work_dir/last_checkpoint``; it is given a view of the runner whose
    ``work_dir`` is :meth:`pointer_dir`. Subclasses define the two methods; takes
    ``CheckpointHook``'s arguments.
    """

    def pointer_dir(self, runner) -> str:
        """The directory the pointer file is written into (exists when this returns)."""
        raise NotImplementedError

    def pointer_written(self, runner, written: str) -> None:
        """Called with the pointer file ``written`` (main process only)."""
        raise NotImplementedError

    def _save_checkpoint_with_step(self, runner, step, meta):
        directory = self.pointer_dir(runner)
        super()._save_checkpoint_with_step(_WorkDirRedirect(runner, directory), step, meta)
        written = osp.join(directory, 'last_checkpoint')
        if osp.isfile(written):  # only the main process writes it
            self.pointer_written(runner, written)


def drop_cached_file_backends(backend_type: type) -> None:
    """Forget the file backend instances of exactly ``backend_type`` that mmengine cached,
    so that the next ``get_file_backend`` builds the class registered now.

    Args:
        backend_type: The replaced backend class (e.g. ``LocalBackend``).
    """
    from mmengine.fileio import io as mmengine_io
    for key, backend in list(mmengine_io.backend_instances.items()):
        if type(backend) is backend_type:
            del mmengine_io.backend_instances[key]


def compile_runner_method(runner, method: str) -> None:
    """``torch.compile`` the runner's (wrapped) model's ``method`` as the config's
    ``compile`` asks, with mmengine's own code and options (nothing when it asks none).

    Args:
        runner: A built ``Runner`` (its model is wrapped already).
        method: E.g. ``'test_step'``.
    """
    runner._maybe_compile(method)


def to_cpu(data: Any) -> Any:
    """New containers holding ``data``'s tensors and data elements moved to the CPU
    (lists, tuples and dicts are walked); anything else is returned as is."""
    from mmengine.evaluator.metric import _to_cpu
    return _to_cpu(data)


__all__ = ['CheckpointHookWithPointerDir', 'drop_cached_file_backends', 'compile_runner_method',
           'to_cpu']
