"""Reading, converting and loading PVT checkpoints: the one place weights enter pvt_mm.

The pipeline is ``read_checkpoint`` (safe load) -> ``unwrap_state_dict`` (``model`` /
``state_dict`` / ``module.`` / ``backbone.`` wrappers) -> ``convert_official_keys`` (pure,
idempotent) -> ``adapt_state_dict`` (position embeddings resized, leftovers split off,
mismatches reported) -> ``load_state_dict(strict=True)``.
"""
import math
import os
import pickle
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor, nn

StateDict = Dict[str, Tensor]


# Where the official ImageNet-1k PVT v1 weights are published.
OFFICIAL_RELEASE_URL = 'https://github.com/whai362/PVT/releases/download/v2/'
OFFICIAL_RELEASE_FILES = ('pvt_tiny.pth', 'pvt_small.pth', 'pvt_medium.pth', 'pvt_large.pth')


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
    return [HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype, encode, *dtype_classes,
            (_history_buffer_getattr, 'builtins.getattr'),
            (_history_buffer_getattr, '__builtin__.getattr')]


def read_checkpoint(path: str, map_location: str = 'cpu') -> dict:
    """Safely read a checkpoint file (``.pth`` via ``weights_only=True``, or safetensors).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is empty, truncated, not a checkpoint, or would need to
            run code to load.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        name = os.path.basename(path)
        source = (f'from {OFFICIAL_RELEASE_URL}{name} ' if name in OFFICIAL_RELEASE_FILES else '')
        raise FileNotFoundError(
            f'Checkpoint file {path!r} does not exist. Download the weights {source}and put '
            'them there (configs/_base_/pvt.py lists the paths), point '
            'init_cfg.checkpoint at the right file, or set init_cfg=None to train from scratch.')
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
        # Only add (and later remove) what is not allow-listed globally already, so a
        # process-wide allow-list (pvt_mm.runtime) survives this call.
        present = set(torch.serialization.get_safe_globals())
        extra = [g for g in mmengine_safe_globals() if g not in present]
        with torch.serialization.safe_globals(extra):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if 'Weights only load failed' in str(exc):
            raise CheckpointError(
                f'Refused to load {path!r}: it holds Python objects outside the allow-list of '
                'tensors and mmengine/numpy state, which could run code on load. pvt_mm only '
                'loads checkpoints with torch.load(weights_only=True). Re-save the weights as a '
                f'plain state_dict from a trusted source. Detail: {str(exc).splitlines()[-1]}'
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


_OFFICIAL_RULES = (
    (re.compile(r'^patch_embed(\d+)\.(.+)$'), lambda m, last: f'stages.{int(m[1]) - 1}.patch_embed.{m[2]}'),
    (re.compile(r'^pos_embed(\d+)$'), lambda m, last: f'stages.{int(m[1]) - 1}.pos_embed'),
    (re.compile(r'^block(\d+)\.(\d+)\.(.+)$'), lambda m, last: f'stages.{int(m[1]) - 1}.layers.{m[2]}.{m[3]}'),
    (re.compile(r'^norm\.(.+)$'), lambda m, last: f'stages.{last}.norm.{m[1]}'),
    (re.compile(r'^cls_token$'), lambda m, last: f'stages.{last}.cls_token'),
)


def convert_official_keys(state_dict: StateDict, num_stages: int = 4) -> StateDict:
    """Rename official PVT release keys to pvt_mm's; pure and idempotent.

    ``patch_embed{i}.*`` -> ``stages.{i-1}.patch_embed.*``, ``pos_embed{i}`` ->
    ``stages.{i-1}.pos_embed``, ``block{i}.{j}.*`` -> ``stages.{i-1}.layers.{j}.*``,
    ``norm.*`` / ``cls_token`` -> the last stage's. Keys already in pvt_mm format, and
    ``head.*``, pass through unchanged; tensors are shared, not copied.
    """
    converted = OrderedDict()
    for key, value in state_dict.items():
        for pattern, rename in _OFFICIAL_RULES:
            match = pattern.match(key)
            if match:
                key = rename(match, num_stages - 1)
                break
        converted[key] = value
    return converted


def _split_pos_embed(pos_embed: Tensor, has_cls_slot: bool) -> Tuple[Tensor, Tensor]:
    n = int(has_cls_slot)
    return pos_embed[:, :n], pos_embed[:, n:]


def _resize_grid(grid: Tensor, target_hw: Tuple[int, int]) -> Tensor:
    """Bilinearly resize ``(1, h*w, C)`` tokens to ``target_hw``; source assumed square
    unless its count already equals the target."""
    num = grid.shape[1]
    if num == target_hw[0] * target_hw[1]:
        return grid
    side = math.isqrt(num)
    if side * side != num:
        raise CheckpointError(f'cannot infer the grid of a position embedding with {num} tokens')
    grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=target_hw, mode='bilinear', align_corners=False)
    return grid.flatten(2).transpose(1, 2)


def _depths_of(keys) -> Tuple[int, ...]:
    depths: Dict[int, int] = {}
    for key in keys:
        match = re.match(r'^stages\.(\d+)\.layers\.(\d+)\.', key)
        if match:
            stage, layer = int(match[1]), int(match[2])
            depths[stage] = max(depths.get(stage, 0), layer + 1)
    return tuple(depths[s] for s in sorted(depths))


def _describe_depths(depths: Tuple[int, ...]) -> str:
    from .models.backbones.pvt import ARCH_ZOO
    names = [name for name, arch in ARCH_ZOO.items() if arch['depths'] == depths]
    return f'depths {depths}' + (f' (PVT-{names[0]})' if names else '')


def _short(keys: List[str], limit: int = 8) -> str:
    keys = sorted(keys)
    more = f' ... and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def adapt_state_dict(state_dict: StateDict, model: nn.Module,
                     source: str = 'checkpoint') -> Tuple[StateDict, List[str]]:
    """Fit a pvt_mm-format state dict to ``model``.

    Position embeddings are resized to the model's grids (the class slot is kept or
    dropped to match the model). Classification-only parts the model does not have
    (``head.*``, class token, final norm) are returned as leftovers. Anything else that does
    not match is an error naming the keys.

    Returns:
        The state dict to load strictly, and the list of ignored leftover keys.

    Raises:
        CheckpointError: missing backbone keys, unexpected keys or shape mismatches
            (typically a checkpoint of another variant).
    """
    expected = model.state_dict()
    adapted, leftovers, unexpected = OrderedDict(), [], []
    last = getattr(model, 'num_stages', 4) - 1
    classification_only = re.compile(rf'^(head\.|stages\.{last}\.(cls_token$|norm\.))')
    for key, value in state_dict.items():
        if key not in expected:
            (leftovers if classification_only.match(key) else unexpected).append(key)
            continue
        if key.endswith('.pos_embed'):
            stage = model.stages[int(key.split('.')[1])]
            had_cls = f'{key[:-len("pos_embed")]}cls_token' in state_dict or (
                value.shape[1] != expected[key].shape[1]
                and math.isqrt(value.shape[1] - 1) ** 2 == value.shape[1] - 1)
            prefix, grid = _split_pos_embed(value, had_cls)
            grid = _resize_grid(grid, stage.pos_grid).to(value.dtype)
            if stage.num_prefix_tokens:
                if not had_cls:
                    raise CheckpointError(f'{source}: {key} has no class-token slot but the model '
                                          'uses a class token (with_cls_token=True).')
                value = torch.cat((prefix, grid), dim=1)
            else:
                value = grid
        adapted[key] = value

    missing = [k for k in expected if k not in adapted]
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}'
                  for k, v in adapted.items() if v.shape != expected[k].shape]
    if missing or unexpected or mismatched:
        ckpt_depths, model_depths = _depths_of(state_dict), _depths_of(expected)
        lines = [f'{source} does not fit this PVT '
                 f'(model: {_describe_depths(model_depths)}, embed_dims '
                 f'{getattr(model, "embed_dims", "?")}; checkpoint: {_describe_depths(ckpt_depths)}).']
        if missing:
            lines.append(f'  missing backbone keys ({len(missing)}): {_short(missing)}')
        if unexpected:
            lines.append(f'  unexpected keys ({len(unexpected)}): {_short(unexpected)}')
        if mismatched:
            lines.append(f'  shape mismatches ({len(mismatched)}): {_short(mismatched, 4)}')
        lines.append('  Use the checkpoint of the same variant (arch) as the model.')
        raise CheckpointError('\n'.join(lines))
    return adapted, leftovers


def load_pretrained(model: nn.Module, path: str, map_location: str = 'cpu') -> List[str]:
    """Load a PVT checkpoint of any supported format into ``model`` and report.

    Returns:
        The leftover keys that were ignored (logged once).
    """
    ckpt = read_checkpoint(path, map_location)
    state, origin = unwrap_state_dict(ckpt, source=repr(path))
    state = convert_official_keys(state, getattr(model, 'num_stages', 4))
    if not any(k.startswith('stages.') for k in state):
        raise CheckpointError(f'{path!r} holds no PVT weights (its keys look like '
                              f'{_short(list(state), 5)}). Expected an official PVT release, a '
                              'pvt_mm checkpoint, or a model with a PVT backbone.')
    adapted, leftovers = adapt_state_dict(state, model, source=repr(path))
    model.load_state_dict(adapted, strict=True)
    print_log(f'Loaded PVT {origin} from {path} ({len(adapted)} tensors).', logger='current')
    if leftovers:
        print_log(f'Ignored {len(leftovers)} checkpoint entries this model does not use '
                  f'(classification parts): {_short(leftovers)}', logger='current')
    return leftovers


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
            f'{path!r} holds {what} ({len(state)} tensors such as {_short(list(state), 3)}), not '
            'a whole detector/segmentor/classifier. Load backbone weights with '
            'model.backbone.init_cfg=dict(type="Pretrained", checkpoint=...) instead of '
            'load_from / --resume / a test checkpoint.')
    return ckpt


def convert_checkpoint_file(src: str, dst: str, num_stages: int = 4) -> StateDict:
    """Convert an official PVT release file to a pvt_mm checkpoint (``{'state_dict': ...}``).

    The output is written to a temporary file and renamed, so a failure never leaves a
    partial ``dst``.
    """
    state, _ = unwrap_state_dict(read_checkpoint(src), source=repr(src))
    converted = convert_official_keys(state, num_stages)
    tmp = f'{dst}.tmp'
    torch.save({'state_dict': converted}, tmp)
    os.replace(tmp, dst)
    return converted


__all__ = [
    'CheckpointError', 'read_checkpoint', 'unwrap_state_dict', 'convert_official_keys',
    'adapt_state_dict', 'load_pretrained', 'check_model_checkpoint', 'convert_checkpoint_file',
    'mmengine_safe_globals',
]
