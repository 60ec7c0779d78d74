"""The one safe read of a checkpoint, for any model: a local file or URL in, a dict of
tensors out, without running code from the file; also the mmengine loaders that route
every checkpoint mmengine opens through it.

``read_checkpoint`` (safe load) -> ``unwrap_state_dict`` (``model`` / ``state_dict`` /
``module.`` / ``backbone.`` wrappers) give a model's tensors in whatever key format the
file used. Nothing here knows a model: each model's key mapping and adaptation live beside
it (PVT's in :mod:`pvt_mm.models.backbones.pvt_convert`).
"""
import os
from typing import Tuple

from torch import Tensor

from .allow_list import check_not_empty, load_pth
from .download import local_checkpoint_path
from .errors import CheckpointError, StateDict


def read_checkpoint(path: str, map_location: str = 'cpu') -> dict:
    """Safely read a checkpoint (``.pth`` via ``weights_only=True``, or safetensors).

    Args:
        path: A local file, or an http(s) URL, downloaded once into the torch hub cache
            (see :func:`~pvt_mm.checkpoint.local_checkpoint_path`) and then read the same
            safe way.
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
            f'Checkpoint file {path!r} does not exist. Put the weights there, point '
            'init_cfg.checkpoint at the right file or http(s) URL, or set init_cfg=None to '
            'train from scratch.')
    check_not_empty(path)
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
    return load_pth(path, map_location)


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


__all__ = ['read_checkpoint', 'unwrap_state_dict', 'use_safe_checkpoint_loaders']
