"""Config files to objects: read a config (:func:`read_config`), prepare it for a run the
way mmdet's tools do (:func:`load_config`), and build its model (:func:`build_from_config`);
the one place every tool reads its config."""
import os
from typing import Any, Optional, Tuple

import torch


def read_config(path: str, cfg_options: Optional[dict] = None):
    """Read a config file (its ``custom_imports`` run) and merge ``cfg_options`` into it: the
    one place every tool reads its config.

    Args:
        path: The config file.
        cfg_options: Overrides, as mmengine's ``DictAction`` parses ``--cfg-options``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    from mmengine.config import Config
    if not os.path.isfile(path):
        raise FileNotFoundError(f'config file {path!r} does not exist')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def load_config(path: str, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
                launcher: str = 'none'):
    """Read a config the way mmdet's tools do: ``--cfg-options`` merged, ``work_dir``
    defaulting to ``./work_dirs/<config name>``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    cfg = read_config(path, cfg_options)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = os.path.join('./work_dirs', os.path.splitext(os.path.basename(path))[0])
    return cfg


def build_from_config(config: str, cfg_options: Optional[dict] = None,
                      with_weights: bool = True,
                      part: Optional[str] = None) -> Tuple[torch.nn.Module, Any]:
    """Build a config's model through its own registry (after ``init_default_scope``).

    Args:
        config: Any mmdet / mmseg / mmpretrain config file.
        cfg_options: Overrides merged into the config.
        with_weights: Keep the backbone's ``init_cfg``; ``False`` drops it, so that nothing
            reads a checkpoint later (complexity and speed do not depend on the weights).
        part: Build only ``model.<part>`` (e.g. ``'backbone'``) instead of the whole model.

    Returns:
        ``(model, cfg)``; the model is in eval mode and not initialised (``init_weights``
        has not run).

    Raises:
        FileNotFoundError: ``config`` does not exist.
        KeyError: the config's model has no ``part``.
    """
    from mmengine.registry import MODELS, init_default_scope
    cfg = read_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model_cfg = cfg.get('model') or {}
    if part is not None:
        if model_cfg.get(part) is None:
            raise KeyError(f'config {config!r} has no model.{part}')
        model_cfg = model_cfg[part].copy()
        if not with_weights:
            model_cfg['init_cfg'] = None
    elif not with_weights and model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone.init_cfg = None
    model = MODELS.build(model_cfg)
    model.eval()
    return model, cfg


__all__ = ['read_config', 'load_config', 'build_from_config']
