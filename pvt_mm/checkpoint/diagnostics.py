"""Why a checkpoint does not fit: the strict-load report for a model's state dict and the
refusal of backbone-only weights where a whole model's checkpoint is needed."""
from typing import List, Tuple

from .download import local_checkpoint_path
from .errors import CheckpointError, StateDict
from .safe_read import read_checkpoint, unwrap_state_dict


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
        # Generic on purpose: this module knows no model, only mmengine's 'backbone.' prefix.
        raise CheckpointError(
            f'{path!r} holds no "backbone." weights ({len(state)} tensors such as '
            f'{short_keys(list(state), 3)}): backbone-only weights, not '
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


__all__ = ['short_keys', 'strict_load_problems', 'check_model_checkpoint', 'open_model_checkpoint']
