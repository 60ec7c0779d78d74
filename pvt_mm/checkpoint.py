"""Generic checkpoint IO: the one place checkpoint files are read, for any model.

``read_checkpoint`` (safe load) -> ``unwrap_state_dict`` (``model`` / ``state_dict`` /
``module.`` / ``backbone.`` wrappers) give a model's tensors in whatever key format the
file used; ``strict_load_problems`` lists what keeps them from loading strictly. Nothing
here knows a model: each model's key mapping and adaptation live beside it (PVT's in
:mod:`pvt_mm.models.backbones.pvt_convert`), so this module imports no model.
"""
import os
import pickle
from typing import Dict, List, Tuple
from urllib.parse import urlparse

from torch import Tensor

from .capabilities import weights_only_load

StateDict = Dict[str, Tensor]


# Where the official ImageNet-1k PVT v1 and v2 weights are published (one release, "v2").
OFFICIAL_RELEASE_URL = 'https://github.com/whai362/PVT/releases/download/v2/'
OFFICIAL_RELEASE_FILES = ('pvt_tiny.pth', 'pvt_small.pth', 'pvt_medium.pth', 'pvt_large.pth',
                          *(f'pvt_v2_{arch}.pth' for arch in ('b0', 'b1', 'b2', 'b3', 'b4', 'b5',
                                                              'b2_li')))


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def _history_buffer_getattr(obj, name):
    """Stand-in for ``getattr`` while unpickling: mmengine's ``HistoryBuffer`` pickles its
    statistics methods as ``getattr(HistoryBuffer, 'mean')``; nothing else may use it."""
    from mmengine.logging.history_buffer import HistoryBuffer
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
    from mmengine.logging.history_buffer import HistoryBuffer

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


URL_SCHEMES = ('http', 'https')


def is_url(path: str) -> bool:
    """Whether ``path`` names a checkpoint by an http(s) URL rather than a local file."""
    return urlparse(os.fspath(path)).scheme in URL_SCHEMES


def url_cache_path(url: str) -> str:
    """Where a checkpoint URL is cached: ``<torch hub dir>/checkpoints/<file name>``, the file
    that mmengine's and torch's own ``load_url`` read and write, so each downloads it once."""
    import torch.hub
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise CheckpointError(f'Checkpoint URL {url!r} names no file (its path ends with "/"); '
                              'give the URL of the .pth file itself.')
    return os.path.join(torch.hub.get_dir(), 'checkpoints', name)


def _download(url: str, cached: str) -> None:
    """Stream ``url`` into a temporary file beside ``cached`` and rename it into place only
    when every announced byte arrived: the cache never holds a partial checkpoint.

    (``torch.hub.download_url_to_file`` keeps a body cut short by a dropped connection as if
    it were complete, so it is not used.)
    """
    import shutil
    import urllib.request

    from .fileio import replaced_atomically
    print(f'Downloading {url} to {cached}', flush=True)
    try:
        with replaced_atomically(cached, suffix='.partial') as tmp, open(tmp, 'wb') as out, \
                urllib.request.urlopen(url, timeout=60) as response:
            expected = response.headers.get('Content-Length')
            shutil.copyfileobj(response, out, length=1 << 20)
            out.flush()
            os.fsync(out.fileno())
            received = out.tell()
            if expected is not None and received != int(expected):
                raise OSError(f'the connection closed after {received} of {expected} bytes')
    except Exception as exc:  # urllib raises URLError/HTTPError/OSError/... for a failed download
        raise CheckpointError(
            f'Cannot download checkpoint {url!r} into the torch hub cache {cached!r} '
            f'({type(exc).__name__}: {exc}). Check the URL and the network, or download the '
            f'file yourself, put it at {cached!r} (or anywhere) and point the config at the '
            'local path.') from exc


def local_checkpoint_path(path: str) -> str:
    """The local file of a checkpoint: ``path`` itself, or for an http(s) URL its copy in the
    torch hub cache, downloaded on first use.

    In a distributed run local rank 0 downloads while the other ranks wait, as mmengine's
    ``load_from_http`` does.

    Raises:
        CheckpointError: the download failed (the message names the URL and cache path).
    """
    path = os.fspath(path)
    if not is_url(path):
        return path
    cached = url_cache_path(path)
    from mmengine.dist import barrier, get_dist_info, get_local_rank
    _, world_size = get_dist_info()
    if get_local_rank() == 0 and not os.path.isfile(cached):
        _download(path, cached)
    if world_size > 1:
        barrier()
        if not os.path.isfile(cached):  # a cache not shared with this node's rank 0
            _download(path, cached)
    return cached


def _refusal_detail(exc: Exception) -> str:
    """The line of an unpickling refusal that names the global (torch words it over several
    lines, and its last one is a link)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if 'global' in line.lower()]
    return (named or lines or [type(exc).__name__])[0]


def read_checkpoint(path: str, map_location: str = 'cpu') -> dict:
    """Safely read a checkpoint (``.pth`` via ``weights_only=True``, or safetensors).

    Args:
        path: A local file, or an http(s) URL, downloaded once into the torch hub cache
            (see :func:`local_checkpoint_path`) and then read the same safe way.
        map_location: Where to put the tensors.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is empty, truncated, not a checkpoint, or would need to
            run code to load; the download of a URL failed.
    """
    path = local_checkpoint_path(path)
    if not os.path.isfile(path):
        name = os.path.basename(path)
        url = (f' or point it at the URL {OFFICIAL_RELEASE_URL}{name} (downloaded once into the '
               'torch hub cache)' if name in OFFICIAL_RELEASE_FILES else '')
        raise FileNotFoundError(
            f'Checkpoint file {path!r} does not exist. Put the weights there (configs/_base_/pvt.py '
            f'lists the paths){url}, point init_cfg.checkpoint at the right file or http(s) '
            'URL, or set init_cfg=None to train from scratch.')
    if os.path.getsize(path) == 0:
        raise CheckpointError(f'Checkpoint file {path!r} is empty (0 bytes); download it again.')
    if path.endswith('.safetensors'):
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise CheckpointError(f'{path!r} is a safetensors file; pip install safetensors '
                                  'to read it.') from exc
        try:
            return load_file(path, device=str(map_location))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f'Cannot read safetensors checkpoint {path!r}: {exc}') from exc
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


def unwrap_state_dict(ckpt: dict, source: str = 'checkpoint') -> Tuple[StateDict, str]:
    """Find the backbone's tensors in a checkpoint.

    Handles ``{'state_dict': ...}`` (mmengine), ``{'model': ...}`` (official releases),
    ``module.`` (DDP) and ``backbone.`` (whole detectors, segmentors, classifiers).

    Returns:
        The backbone state dict (keys in whatever format the file used) and a short
        description of where it came from.
    """
    state = ckpt
    for wrapper in ('state_dict', 'model'):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    if not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f'{source} has no state dict of tensors (top-level keys: '
                              f'{sorted(ckpt)[:8]}).')
    backbone = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    if backbone:
        return backbone, 'backbone of a full model'
    return state, 'backbone weights'


def short_keys(keys: List[str], limit: int = 8) -> str:
    """The first ``limit`` of ``keys`` (sorted) and how many more there are, for messages.

    Args:
        keys: Keys (or any strings) to list.
        limit: How many to name.
    """
    keys = sorted(keys)
    more = f' ... and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def strict_load_problems(state_dict: StateDict, expected: StateDict,
                         unexpected: List[str]) -> List[str]:
    """What keeps ``state_dict`` from loading strictly into a model whose state dict is
    ``expected``: one indented line each for missing keys, unexpected keys and shape
    mismatches; empty when it fits.

    Args:
        state_dict: The (already converted) tensors to load.
        expected: The model's own ``state_dict()``.
        unexpected: Keys of the checkpoint the caller found no place for.
    """
    missing = [k for k in expected if k not in state_dict]
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}'
                  for k, v in state_dict.items() if v.shape != expected[k].shape]
    lines = []
    if missing:
        lines.append(f'  missing backbone keys ({len(missing)}): {short_keys(missing)}')
    if unexpected:
        lines.append(f'  unexpected keys ({len(unexpected)}): {short_keys(unexpected)}')
    if mismatched:
        lines.append(f'  shape mismatches ({len(mismatched)}): {short_keys(mismatched, 4)}')
    return lines


def check_model_checkpoint(path: str) -> dict:
    """Read a checkpoint meant for a whole model (``load_from``, ``--resume``, testing) and
    refuse one that holds backbone weights only, which mmengine would load into nothing.

    Raises:
        FileNotFoundError, CheckpointError: see :func:`read_checkpoint`; also a backbone-only
            checkpoint, with the config line that loads it properly.
    """
    ckpt = read_checkpoint(path)
    state, origin = unwrap_state_dict(ckpt, source=repr(path))
    if origin != 'backbone of a full model' and state:
        looks_like_pvt = any(k.startswith(('stages.', 'patch_embed1.', 'block1.')) for k in state)
        what = 'PVT backbone weights' if looks_like_pvt else 'no "backbone." weights'
        raise CheckpointError(
            f'{path!r} holds {what} ({len(state)} tensors such as {short_keys(list(state), 3)}), not '
            'a whole detector/segmentor/classifier. Load backbone weights with '
            'model.backbone.init_cfg=dict(type="Pretrained", checkpoint=...) instead of '
            'load_from / --resume / a test checkpoint.')
    return ckpt


__all__ = [
    'CheckpointError', 'StateDict', 'read_checkpoint', 'unwrap_state_dict', 'short_keys',
    'strict_load_problems', 'check_model_checkpoint', 'mmengine_safe_globals', 'is_url',
    'url_cache_path', 'local_checkpoint_path',
]
