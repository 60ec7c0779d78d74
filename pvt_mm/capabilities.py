"""What the installed torch can do: the one module that knows torch version differences.

pvt_mm runs on torch 2.1 (the last official mmcv 2.1.0 wheel set) up to today's pinned
release. Model code, checkpoint IO and tools never test versions themselves; they ask here,
and each feature that needs a newer torch fails at its point of use through
:func:`require`, with the version it needs and what to do.

Decided here:

* :func:`is_compiling` / :func:`is_exporting`: whether torch.compile / torch.export is
  tracing (``torch.compiler.is_compiling`` is 2.3+, ``is_exporting`` 2.7+; before, nothing
  exports through torch.export here, since ONNX export needs :data:`ONNX_EXPORT`).
* :func:`autocast_dtype`: the autocast dtype of a device type, or ``None``
  (``torch.is_autocast_enabled(device)`` / ``torch.get_autocast_dtype`` are 2.4+).
* :func:`weights_only_load`: ``torch.load`` that never runs code from the file. torch >= 2.6
  uses its own ``weights_only`` unpickler with the extra globals allow-listed for the call;
  older torch lacks ``safe_globals`` (2.5) / ``(obj, name)`` entries (2.6) / ``add_safe_globals``
  (2.4), so the same allow-list is enforced by a restricted unpickler
  (:class:`_RestrictedUnpickler`).
* :data:`ONNX_EXPORT`, :data:`COMPILE`, :data:`SAFE_GLOBALS`: features with a minimum version.
"""
import pickle
import re
import sys
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import torch


def _version(text: str) -> Tuple[int, int]:
    """``'2.1.2+cu121'`` -> ``(2, 1)``."""
    major, minor = re.match(r'(\d+)\.(\d+)', text).groups()
    return int(major), int(minor)


#: The installed torch as ``(major, minor)``.
TORCH = _version(torch.__version__)


class Feature:
    """A feature that needs at least torch ``minimum``.

    Args:
        name: What the user asked for, as they would say it.
        minimum: The oldest torch release that has it, ``(major, minor)``.
        instead: What to do on an older torch.
    """

    def __init__(self, name: str, minimum: Tuple[int, int], instead: str) -> None:
        self.name = name
        self.minimum = minimum
        self.instead = instead

    @property
    def available(self) -> bool:
        return TORCH >= self.minimum

    def __repr__(self) -> str:
        return f'Feature({self.name!r}, torch>={self.minimum[0]}.{self.minimum[1]})'


class CapabilityError(RuntimeError):
    """A feature the installed torch does not have."""


#: ``torch.onnx.export(dynamo=True)`` writing opset 23 (fused ``Attention``); tested on the
#: pinned torch only (docs/get_started.md).
ONNX_EXPORT = Feature(
    'ONNX export (the dynamo exporter at opset 23)', (2, 9),
    'install the pinned stack (bash tools/setup_env.sh: torch 2.14.1) in a separate '
    'environment for exporting; the exported file then runs anywhere ONNX Runtime does')
#: ``--compile``: torch.compile of a whole mmengine model's train / test step. torch 2.1.2's
#: dynamo fails on mmpretrain's data preprocessor (``stack_batch``); 2.14.1 is the oldest
#: release it was tested to work on.
COMPILE = Feature(
    '--compile (torch.compile of the whole model)', (2, 14),
    'drop --compile (eager mode computes the same results), or use the pinned stack '
    '(bash tools/setup_env.sh: torch 2.14.1)')
#: ``torch.serialization.add_safe_globals`` with ``(callable, 'module.name')`` entries.
SAFE_GLOBALS = Feature('allow-listed globals for torch.load(weights_only=True)', (2, 6),
                       'nothing: pvt_mm enforces the same allow-list itself')


def require(feature: Feature) -> None:
    """Raise a clear error when the installed torch lacks ``feature``.

    Raises:
        CapabilityError: names the feature, the torch it needs, the installed one and what
            to do instead.
    """
    if not feature.available:
        raise CapabilityError(
            f'{feature.name} needs torch >= {feature.minimum[0]}.{feature.minimum[1]}; this '
            f'environment has torch {torch.__version__}. To use it, {feature.instead}.')


def exit_unless(feature: Feature) -> None:
    """For command-line tools: :func:`require`, exiting with its message (no traceback)."""
    try:
        require(feature)
    except CapabilityError as exc:
        sys.exit(f'error: {exc}')


# --------------------------------------------------------------------------- tracing state
if hasattr(torch.compiler, 'is_compiling'):  # 2.3+
    is_compiling: Callable[[], bool] = torch.compiler.is_compiling
else:  # torch 2.1-2.2 have no public name; dynamo folds this one to True while tracing
    from torch._dynamo import is_compiling


def _never_exporting() -> bool:
    """torch < 2.7: nothing in pvt_mm exports through torch.export (ONNX needs 2.9)."""
    return False


#: ``torch.compiler.is_exporting`` (2.7+).
is_exporting: Callable[[], bool] = getattr(torch.compiler, 'is_exporting', None) or _never_exporting


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast casts to on ``device_type`` (``'cpu'``, ``'cuda'``), or ``None``
    when autocast is off there."""
    if TORCH >= (2, 4):
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    if device_type == 'cuda':  # torch < 2.4: per-device functions
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
    if device_type == 'cpu':
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return None


# --------------------------------------------------------------------------- safe loading
def _global_name(obj: Any) -> str:
    return f'{obj.__module__}.{obj.__qualname__}'


def _torch_allowed_globals() -> Dict[str, Any]:
    """What torch's own ``weights_only`` unpickler accepts, by name (torch < 2.4 path)."""
    import collections
    from codecs import encode

    allowed: Dict[str, Any] = {
        'collections.OrderedDict': collections.OrderedDict,
        'collections.Counter': collections.Counter,
        'torch.nn.parameter.Parameter': torch.nn.Parameter,
        'torch.serialization._get_layout': torch.serialization._get_layout,
        'torch.Size': torch.Size, 'torch.Tensor': torch.Tensor, 'torch.device': torch.device,
        '_codecs.encode': encode, 'builtins.bytearray': bytearray, 'builtins.set': set,
        'builtins.complex': complex,
        'torch._tensor._rebuild_from_type_v2': torch._tensor._rebuild_from_type_v2,
    }
    for name in ('_rebuild_tensor', '_rebuild_tensor_v2', '_rebuild_tensor_v3',
                 '_rebuild_parameter', '_rebuild_parameter_with_state', '_rebuild_qtensor',
                 '_rebuild_sparse_tensor', '_rebuild_meta_tensor_no_storage',
                 '_rebuild_nested_tensor'):
        if hasattr(torch._utils, name):
            allowed[f'torch._utils.{name}'] = getattr(torch._utils, name)
    for name in dir(torch):  # dtypes, layouts, quantisation schemes, tensor classes
        value = getattr(torch, name, None)
        if isinstance(value, (torch.dtype, torch.layout, torch.qscheme)):
            allowed[str(value)] = value
    for cls in torch._tensor_classes:
        allowed[_global_name(cls)] = cls
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only allow-listed globals (torch < 2.4's safe load).

    torch.load subclasses it (its own ``find_class`` maps storage names first, then calls
    this one), so every other global a file names goes through :meth:`find_class`.
    """

    allowed: Dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = f'{module}.{name}'
        if key in self.allowed:
            return self.allowed[key]
        raise pickle.UnpicklingError(
            f'Weights only load failed: unsupported global {key}, which is not on the '
            'allow-list of tensors and mmengine/numpy state')


class _RestrictedPickleModule:
    """The ``pickle_module`` torch.load is given on torch < 2.4."""

    Unpickler = _RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @classmethod
    def load(cls, file, **kwargs):  # torch's legacy (non-zip) format reads its header with it
        return cls.Unpickler(file, **kwargs).load()


def _entries(extra: Iterable) -> Dict[str, Any]:
    """``add_safe_globals``-style entries (objects, or ``(obj, 'module.name')``) by name."""
    out = {}
    for entry in extra:
        obj, name = entry if isinstance(entry, tuple) else (entry, _global_name(entry))
        out[name] = obj
    return out


def weights_only_load(path: str, map_location: Any, extra_globals: Iterable) -> Any:
    """``torch.load(path)`` that builds tensors, containers and ``extra_globals`` only.

    Args:
        path: A local checkpoint file.
        map_location: As for ``torch.load``.
        extra_globals: Entries in ``torch.serialization.add_safe_globals``' form: objects, or
            ``(obj, 'module.name')`` for an object pickled under another name.

    Raises:
        pickle.UnpicklingError: the file names a global outside the allow-list (the message
            starts with ``'Weights only load failed'`` on every torch).
    """
    extra = list(extra_globals)
    if SAFE_GLOBALS.available:
        # Only add (and later remove) what is not allow-listed process-wide already.
        present = set(torch.serialization.get_safe_globals())
        extra = [g for g in extra if g not in present]
        with torch.serialization.safe_globals(extra):
            return torch.load(path, map_location=map_location, weights_only=True)
    unpickler = type('_AllowListUnpickler', (_RestrictedUnpickler, ),
                     {'allowed': {**_torch_allowed_globals(), **_entries(extra)}})
    module = type('_AllowListPickleModule', (_RestrictedPickleModule, ), {'Unpickler': unpickler})
    return torch.load(path, map_location=map_location, weights_only=False, pickle_module=module)


__all__ = [
    'TORCH', 'Feature', 'CapabilityError', 'ONNX_EXPORT', 'COMPILE', 'SAFE_GLOBALS', 'require',
    'exit_unless',
    'is_compiling', 'is_exporting', 'autocast_dtype', 'weights_only_load',
]
