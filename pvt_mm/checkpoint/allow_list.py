"""The unpickling allow-list: what a ``.pth`` file may contain, and the one ``torch.load``
that enforces it (:func:`load_pth`).

Tensors, containers and exactly the non-tensor types mmengine's training checkpoints pickle
(message hub history buffers, numpy scalars and arrays) load; any other global is refused,
so reading a checkpoint never runs code from the file.
"""
import os
import pickle

from ..capabilities import weights_only_load
from .errors import CheckpointError


def _history_buffer_getattr(obj, name):
    """Stand-in for ``getattr`` while unpickling: mmengine's ``HistoryBuffer`` pickles its
    statistics methods as ``getattr(HistoryBuffer, 'mean')``; nothing else may use it."""
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and isinstance(name, str) and callable(getattr(HistoryBuffer, name, None)) \
            and not name.startswith('_'):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'Weights only load failed: the checkpoint asks for getattr({obj!r}, {name!r}), '
        'which is not allow-listed')


def mmengine_safe_globals() -> list:
    """The exact non-tensor types mmengine checkpoints pickle (message hub, numpy scalars).

    Allow-listing them lets ``torch.load(weights_only=True)`` read full training
    checkpoints without ever running arbitrary code. ``getattr`` is replaced by a version
    that only resolves ``HistoryBuffer`` statistics methods.
    """
    import numpy as np
    from mmengine.logging import HistoryBuffer

    try:  # numpy >= 2 moved the pickling helpers to numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(name)) for name in (
        'float16', 'float32', 'float64', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint32',
        'uint64', 'bool')]
    from codecs import encode  # numpy pickles raw array bytes through codecs.encode
    # numpy 2 moved numpy.core to numpy._core: a checkpoint names its helpers by the module
    # of the numpy that wrote it, so both spellings are allowed (a checkpoint of the oldest
    # stack, numpy 1.26, loads on the pinned one, numpy 2, and back).
    aliases = [(obj, f'{module}.multiarray.{obj.__name__}')
               for module in ('numpy.core', 'numpy._core') for obj in (_reconstruct, scalar)]
    return [HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype, encode, *dtype_classes,
            *aliases, (_history_buffer_getattr, 'builtins.getattr'),
            (_history_buffer_getattr, '__builtin__.getattr')]


def _refusal_detail(exc: Exception) -> str:
    """The line of an unpickling refusal that names the global (torch words it over several
    lines, and its last one is a link)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if 'global' in line.lower()]
    return (named or lines or [type(exc).__name__])[0]


def check_not_empty(path: str) -> None:
    """Refuse an empty (0-byte) checkpoint file.

    Raises:
        CheckpointError: ``path`` is empty; the message says to download it again.
    """
    if os.path.getsize(path) == 0:
        raise CheckpointError(f'Checkpoint file {path!r} is empty (0 bytes); download it again.')


def load_pth(path: str, map_location: str = 'cpu') -> dict:
    """Read a local ``torch.save`` file with ``weights_only=True`` and the allow-list.

    Args:
        path: An existing local file.
        map_location: Where to put the tensors.

    Raises:
        CheckpointError: the file is empty, truncated, not a checkpoint dict, or would need
            to run code to load (the message names the refused global).
    """
    check_not_empty(path)
    try:
        ckpt = weights_only_load(path, map_location, mmengine_safe_globals())
    except pickle.UnpicklingError as exc:
        if 'Weights only load failed' in str(exc):
            raise CheckpointError(
                f'Refused to load {path!r}: it holds Python objects outside the allow-list of '
                'tensors and mmengine/numpy state, which could run code on load. pvt_mm only '
                'loads checkpoints with torch.load(weights_only=True). Re-save the weights as a '
                f'plain state_dict from a trusted source. Detail: {_refusal_detail(exc)}'
            ) from exc
        raise CheckpointError(f'{path!r} is not a PyTorch checkpoint ({exc}).') from exc
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(
            f'Cannot read checkpoint {path!r} ({os.path.getsize(path)} bytes): the file is '
            f'truncated or not a PyTorch checkpoint ({type(exc).__name__}: {exc}). '
            'Download it again.') from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{path!r} holds a {type(ckpt).__name__}, not a checkpoint dict.')
    return ckpt


__all__ = ['mmengine_safe_globals', 'check_not_empty', 'load_pth']
