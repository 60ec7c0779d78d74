"""Generic checkpoint IO: the one place checkpoint files are read, for any model.

``read_checkpoint`` (safe load) -> ``unwrap_state_dict`` (``model`` / ``state_dict`` /
``module.`` / ``backbone.`` wrappers) give a model's tensors in whatever key format the
file used; ``strict_load_problems`` lists what keeps them from loading strictly. Nothing
here knows a model: each model's key mapping and adaptation live beside it (PVT's in
:mod:`pvt_mm.models.backbones.pvt_convert`), so this module imports no model.
"""
import hashlib
import json
import os
import pickle
import re
import zipfile
from typing import Dict, List, Tuple
from urllib.parse import urlparse

from torch import Tensor

from .capabilities import weights_only_load

StateDict = Dict[str, Tensor]


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
    """Where a checkpoint URL is cached: ``<torch hub dir>/checkpoints/<sha256 of the URL>/
    <file name>``. Each URL has its own directory, so two URLs ending in the same file name
    never share a file; the file keeps its name, so torch hub's ``<name>-<sha256 prefix>.pth``
    check still applies to it."""
    import torch.hub
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise CheckpointError(f'Checkpoint URL {url!r} names no file (its path ends with "/"); '
                              'give the URL of the .pth file itself.')
    digest = hashlib.sha256(url.encode()).hexdigest()
    return os.path.join(torch.hub.get_dir(), 'checkpoints', digest, name)


def _check_archive(path: str, name: str) -> None:
    """Refuse a downloaded file that is not a whole checkpoint, before it enters the cache.

    A ``torch.save`` zip archive must have its central directory (written last, so a cut
    body lacks it), one ``<archive>/data.pkl`` and intact CRCs; a safetensors file must be as
    long as its header says. A file in torch's legacy (non-zip) format has no such index and
    is checked by reading it safely.

    Args:
        path: The downloaded (temporary) file.
        name: The name it is cached under (``.safetensors`` picks that format).

    Raises:
        CheckpointError: the file is incomplete or not a checkpoint.
    """
    problem = None
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if not any(n.count('/') == 1 and n.endswith('/data.pkl') for n in names):
                    problem = 'a zip archive without the data.pkl of a torch.save file'
                else:
                    bad = archive.testzip()
                    if bad is not None:
                        problem = f'a damaged archive (CRC mismatch in {bad})'
        except (zipfile.BadZipFile, OSError) as exc:
            problem = f'a damaged archive ({exc})'
    elif name.endswith('.safetensors'):
        with open(path, 'rb') as f:
            head = f.read(8)
            size = int.from_bytes(head, 'little') if len(head) == 8 else -1
            header = f.read(size) if size > 0 else b''
        try:
            ends = [int(v['data_offsets'][1]) for k, v in json.loads(header).items()
                    if k != '__metadata__']
        except (ValueError, KeyError, TypeError, AttributeError):
            problem = 'not a safetensors file (unreadable header)'
        else:
            expected = 8 + size + max(ends, default=0)
            if os.path.getsize(path) != expected:
                problem = f'{os.path.getsize(path)} bytes where the header announces {expected}'
    else:
        read_checkpoint(path)  # legacy torch.save format: only a full safe read can tell
    if problem is not None:
        raise CheckpointError(f'the file received is not a complete checkpoint: {problem}')


def _check_hash(name: str, digest: str) -> None:
    """torch hub's convention: a file named ``<name>-<hex>.<ext>`` must have a SHA-256 that
    begins with ``<hex>``."""
    import torch.hub
    match = re.search(torch.hub.HASH_REGEX, name)
    prefix = match.group(1) if match else ''
    if prefix and not digest.startswith(prefix):
        raise CheckpointError(f'its SHA-256 is {digest[:16]}..., but the file name {name!r} '
                              f'says it begins with {prefix!r} (a damaged or substituted file)')


def _download(url: str, cached: str) -> None:
    """Stream ``url`` into a temporary file beside ``cached`` and rename it into place only
    when it is complete: every announced byte arrived, the hash in its name (if any) matches,
    and it is a whole checkpoint archive (:func:`_check_archive`, which also catches a body
    cut short without a ``Content-Length``). The cache never holds a partial checkpoint.

    (``torch.hub.download_url_to_file`` keeps a body cut short by a dropped connection as if
    it were complete, so it is not used.)
    """
    import shutil
    import urllib.request

    from .fileio import replaced_atomically
    print(f'Downloading {url} to {cached}', flush=True)
    try:
        with replaced_atomically(cached, suffix='.partial') as tmp:
            sha256 = hashlib.sha256()
            with open(tmp, 'wb') as out, urllib.request.urlopen(url, timeout=60) as response:
                expected = response.headers.get('Content-Length')
                for chunk in iter(lambda: response.read(1 << 20), b''):
                    sha256.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
                received = out.tell()
            if expected is not None and received != int(expected):
                raise OSError(f'the connection closed after {received} of {expected} bytes')
            _check_hash(os.path.basename(cached), sha256.hexdigest())
            _check_archive(tmp, os.path.basename(cached))
    except Exception as exc:  # urllib raises URLError/HTTPError/OSError/... for a failed download
        raise CheckpointError(
            f'Cannot download checkpoint {url!r} into the torch hub cache {cached!r} '
            f'({type(exc).__name__}: {exc}). Check the URL and the network, or download the '
            f'file yourself, put it at {cached!r} (or anywhere) and point the config at the '
            'local path.') from exc


def local_checkpoint_path(path: str) -> str:
    """The local file of a checkpoint: ``path`` itself, or for an http(s) URL its copy in the
    torch hub cache (:func:`url_cache_path`), downloaded on first use.

    One process per cache directory downloads: the processes of a node (or of every node
    sharing the cache's file system) take an exclusive lock on ``<file>.lock`` beside the
    cached file, and the first one in downloads while the others wait for the lock and then
    read the finished file. This needs no process group, so it works the same before and
    after ``torch.distributed`` is initialised, whatever the launcher, and a failed download
    fails each waiting rank with the same clear error instead of leaving them at a barrier.

    Raises:
        CheckpointError: the download failed (the message names the URL and cache path).
    """
    path = os.fspath(path)
    if not is_url(path):
        return path
    cached = url_cache_path(path)
    if os.path.isfile(cached):
        return cached
    import fcntl
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with open(cached + '.lock', 'a') as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        if not os.path.isfile(cached):  # another process may have finished it meanwhile
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
        # A model adds where its official files live (PVT: the backbone's init_weights).
        raise FileNotFoundError(
            f'Checkpoint file {path!r} does not exist. Put the weights there (configs/_base_/pvt.py '
            'lists the paths), point init_cfg.checkpoint at the right file or http(s) '
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


def open_model_checkpoint(path: str) -> Tuple[str, dict]:
    """Resolve and check a whole-model checkpoint, as every tool does before handing it to
    mmengine (``--resume`` / ``load_from``, a test or demo checkpoint).

    Args:
        path: A local file or an http(s) URL (downloaded once into the torch hub cache).

    Returns:
        The local file (``path`` itself, or the URL's cached copy) and the checkpoint read
        from it.

    Raises:
        FileNotFoundError, CheckpointError: see :func:`check_model_checkpoint`.
    """
    local = local_checkpoint_path(path)
    return local, check_model_checkpoint(local)


def _mmengine_loader(filename: str, map_location=None) -> dict:
    """A checkpoint read for mmengine's ``CheckpointLoader``: :func:`read_checkpoint`."""
    return read_checkpoint(os.path.expanduser(filename),
                           'cpu' if map_location is None else map_location)


# mmengine prints "Loads checkpoint by <name without 'load_from_'> backend".
def load_from_local_safely(filename: str, map_location=None) -> dict:
    """mmengine's local-file loader, replaced: the safe read (:func:`read_checkpoint`)."""
    return _mmengine_loader(filename, map_location)


def load_from_http_safely(filename: str, map_location=None) -> dict:
    """mmengine's http(s) loader, replaced: the cached, one-per-node download and the safe
    read (:func:`read_checkpoint`), instead of torch hub's ``weights_only=False`` load."""
    return _mmengine_loader(filename, map_location)


def use_safe_checkpoint_loaders() -> None:
    """Make mmengine read local files and http(s) URLs with :func:`read_checkpoint`.

    mmengine resolves every checkpoint it opens (``Runner`` resume and ``load_from``,
    ``load_checkpoint``, ``init_cfg=dict(type='Pretrained')``, the inferencers) through the
    prefix table of its public ``CheckpointLoader``; these entries replace its ``''`` (local)
    and ``http://`` / ``https://`` loaders, which call ``torch.load`` without an allow-list
    and, for URLs, with ``weights_only=False``. Called when ``pvt_mm`` is imported (so by
    every tool and by a config's ``custom_imports=['pvt_mm']``); repeating it is harmless.
    """
    from mmengine.runner import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_safely, force=True)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'),
                                     loader=load_from_http_safely, force=True)


__all__ = [
    'CheckpointError', 'StateDict', 'read_checkpoint', 'unwrap_state_dict', 'short_keys',
    'strict_load_problems', 'check_model_checkpoint', 'mmengine_safe_globals', 'is_url',
    'url_cache_path', 'local_checkpoint_path', 'open_model_checkpoint',
    'use_safe_checkpoint_loaders',
]
