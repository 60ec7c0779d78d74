"""PVT's checkpoint key mapping, beside the model (as timm's ``checkpoint_filter_fn`` and
mmdet's ``pvt_convert`` sit beside theirs).

Loading is ``read_checkpoint`` -> ``unwrap_state_dict`` (generic, :mod:`pvt_mm.checkpoint`)
-> :func:`convert_official_keys` (official release -> pvt_mm keys; pure, idempotent) ->
:func:`adapt_state_dict` (position embeddings resized to the model's grids, class-token
slot kept or dropped, classification leftovers split off, mismatches reported) ->
``load_state_dict(strict=True)``. :func:`to_official_keys` goes the other way. This module
imports no model class; it reads what it needs from the model it is given.
"""
import math
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor, nn

from ...checkpoint import (CheckpointError, StateDict, read_checkpoint, short_keys,
                           strict_load_problems, unwrap_state_dict)
from ...fileio import replaced_atomically

_OFFICIAL_RULES = (
    (re.compile(r'^patch_embed(\d+)\.(.+)$'), lambda m, last: f'stages.{int(m[1]) - 1}.patch_embed.{m[2]}'),
    (re.compile(r'^pos_embed(\d+)$'), lambda m, last: f'stages.{int(m[1]) - 1}.pos_embed'),
    # v2's FFN wraps its depth-wise conv in a DWConv module: ``mlp.dwconv.dwconv.*``.
    (re.compile(r'^block(\d+)\.(\d+)\.mlp\.dwconv\.dwconv\.(.+)$'),
     lambda m, last: f'stages.{int(m[1]) - 1}.layers.{m[2]}.mlp.dwconv.{m[3]}'),
    (re.compile(r'^block(\d+)\.(\d+)\.(.+)$'), lambda m, last: f'stages.{int(m[1]) - 1}.layers.{m[2]}.{m[3]}'),
    (re.compile(r'^norm\.(.+)$'), lambda m, last: f'stages.{last}.norm.{m[1]}'),  # v1: final norm
    (re.compile(r'^norm(\d+)\.(.+)$'), lambda m, last: f'stages.{int(m[1]) - 1}.norm.{m[2]}'),  # v2
    (re.compile(r'^cls_token$'), lambda m, last: f'stages.{last}.cls_token'),
)


def convert_official_keys(state_dict: StateDict, num_stages: int = 4) -> StateDict:
    """Rename official PVT v1 or v2 release keys to pvt_mm's; pure and idempotent.

    ``patch_embed{i}.*`` -> ``stages.{i-1}.patch_embed.*``, ``pos_embed{i}`` ->
    ``stages.{i-1}.pos_embed``, ``block{i}.{j}.*`` -> ``stages.{i-1}.layers.{j}.*`` (v2's
    ``mlp.dwconv.dwconv.*`` -> ``mlp.dwconv.*``), v1's ``norm.*`` / ``cls_token`` -> the
    last stage's, v2's stage norms ``norm{i}.*`` -> ``stages.{i-1}.norm.*``. Keys already
    in pvt_mm format, and    ``head.*``, pass through unchanged; tensors are shared, not copied.

    Args:
        state_dict: Backbone tensors, official or pvt_mm keys.
        num_stages: Stages of the model (the final norm and class token go to the last).
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

def to_official_keys(state_dict: StateDict, stage_norms: bool = False) -> StateDict:
    """Rename pvt_mm keys to the official PVT release's; the inverse of
    :func:`convert_official_keys` (mmdet's ``pvt_convert`` reads this layout).

    ``stages.{i}.patch_embed.*`` -> ``patch_embed{i+1}.*``, ``stages.{i}.pos_embed`` ->
    ``pos_embed{i+1}``, ``stages.{i}.layers.{j}.*`` -> ``block{i+1}.{j}.*`` and the last
    stage's ``norm.*`` / ``cls_token`` -> ``norm.*`` / ``cls_token`` (v2: every
    ``stages.{i}.norm.*`` -> ``norm{i+1}.*``, ``mlp.dwconv.*`` -> ``mlp.dwconv.dwconv.*``);
    tensors are shared, not copied.

    Args:
        state_dict: A PVT state dict in pvt_mm's layout (e.g. ``model.state_dict()``, or
            the parameter gradients under the same names).
        stage_norms: The model has a norm after every stage (PVT v2, ``arch['stage_norm']``):
            name them ``norm1`` ... instead of v1's single final ``norm``.

    Raises:
        KeyError: a key that is not part of a PVT backbone (strip ``backbone.`` first).
    """
    out = OrderedDict()
    for key, value in state_dict.items():
        parts = key.split('.')
        if len(parts) < 3 or parts[0] != 'stages' or not parts[1].isdigit():
            raise KeyError(f'No official name for {key!r}: not a PVT backbone key (strip '
                           'wrappers such as "backbone." first).')
        stage, rest = int(parts[1]) + 1, '.'.join(parts[3:])
        if parts[2] == 'patch_embed':
            out[f'patch_embed{stage}.{rest}'] = value
        elif parts[2] == 'pos_embed':
            out[f'pos_embed{stage}'] = value
        elif parts[2] == 'layers':
            rest = re.sub(r'^(\d+\.mlp\.dwconv)\.', r'\1.dwconv.', rest)
            out[f'block{stage}.{rest}'] = value
        elif parts[2] == 'norm':
            out[f'norm{stage if stage_norms else ""}.{rest}'] = value
        elif parts[2] == 'cls_token':
            out['cls_token'] = value
        else:
            raise KeyError(f'No official name for {key!r}: not a PVT backbone key.')
    return out


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


def _dims_of(state_dict: StateDict) -> Tuple[int, ...]:
    """Each stage's channels, read from its patch embedding's conv."""
    dims = {}
    for key, value in state_dict.items():
        match = re.match(r'^stages\.(\d+)\.patch_embed\.proj\.weight$', key)
        if match:
            dims[int(match[1])] = value.shape[0]
    return tuple(dims[s] for s in sorted(dims))


def _describe(state_dict: StateDict, arch_zoo: Dict[str, dict]) -> str:
    """``depths (..), embed_dims (..)`` and the presets they match (e.g. PVT-b2 or PVT-b2_li)."""
    depths, dims = _depths_of(state_dict), _dims_of(state_dict)
    names = [f'PVT-{name}' for name, arch in arch_zoo.items()
             if arch['depths'] == depths and tuple(arch['embed_dims']) == dims]
    return f'depths {depths}, embed_dims {dims}' + (f' ({" or ".join(names)})' if names else '')


def adapt_state_dict(state_dict: StateDict, model: nn.Module,
                     source: str = 'checkpoint') -> Tuple[StateDict, List[str]]:
    """Fit a pvt_mm-format state dict to ``model``.

    Position embeddings are resized to the model's grids (the class slot is kept or
    dropped to match the model). Classification-only parts the model does not have
    (``head.*``, class token, final norm) are returned as leftovers. Anything else that does
    not match is an error naming the keys.

    Args:
        state_dict: Backbone tensors in pvt_mm's layout (see :func:`convert_official_keys`).
        model: The PVT to load into (its ``stages[i].pos_grid`` / ``num_prefix_tokens``
            decide the position-embedding grids and class slot).
        source: How to name the checkpoint in errors.

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

    problems = strict_load_problems(adapted, expected, unexpected)
    if problems:
        arch_zoo = getattr(type(model), 'arch_zoo', {})
        raise CheckpointError('\n'.join([
            f'{source} does not fit this PVT (model: {_describe(expected, arch_zoo)}; '
            f'checkpoint: {_describe(state_dict, arch_zoo)}).',
            *problems, '  Use the checkpoint of the same variant (arch) as the model.']))
    return adapted, leftovers


def load_pretrained(model: nn.Module, path: str, map_location: str = 'cpu') -> List[str]:
    """Load a PVT checkpoint of any supported format into ``model`` and report.

    Args:
        model: The PVT to load into.
        path: An official release, a pvt_mm checkpoint, or a whole detector / segmentor /
            classifier checkpoint with a PVT backbone (``.pth`` or ``.safetensors``).
        map_location: Device the tensors are read to.

    Returns:
        The leftover keys that were ignored (logged once).
    """
    ckpt = read_checkpoint(path, map_location)
    state, origin = unwrap_state_dict(ckpt, source=repr(path))
    state = convert_official_keys(state, getattr(model, 'num_stages', 4))
    if not any(k.startswith('stages.') for k in state):
        raise CheckpointError(f'{path!r} holds no PVT weights (its keys look like '
                              f'{short_keys(list(state), 5)}). Expected an official PVT release, a '
                              'pvt_mm checkpoint, or a model with a PVT backbone.')
    adapted, leftovers = adapt_state_dict(state, model, source=repr(path))
    model.load_state_dict(adapted, strict=True)
    print_log(f'Loaded PVT {origin} from {path} ({len(adapted)} tensors).', logger='current')
    if leftovers:
        print_log(f'Ignored {len(leftovers)} checkpoint entries this model does not use '
                  f'(classification parts): {short_keys(leftovers)}', logger='current')
    return leftovers


def convert_checkpoint_file(src: str, dst: str, num_stages: int = 4) -> StateDict:
    """Convert an official PVT v1 or v2 release file to a pvt_mm checkpoint
    (``{'state_dict': ...}``).

    The output is written to a temporary file and renamed, so a failure never leaves a
    partial ``dst``.

    Args:
        src: The official checkpoint (optionally wrapped under ``model``).
        dst: Where to write the pvt_mm checkpoint.
        num_stages: Stages of the model (the final norm and class token go to the last).
    """
    state, _ = unwrap_state_dict(read_checkpoint(src), source=repr(src))
    converted = convert_official_keys(state, num_stages)
    with replaced_atomically(dst) as tmp:  # a unique temporary name, removed on failure
        torch.save({'state_dict': converted}, tmp)
    return converted


__all__ = ['convert_official_keys', 'to_official_keys', 'adapt_state_dict', 'load_pretrained',
           'convert_checkpoint_file']
