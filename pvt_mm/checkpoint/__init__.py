"""Generic checkpoint IO, for any model: the public names of the package's modules.

* :mod:`.allow_list`: what a ``.pth`` may unpickle, and the ``torch.load`` that enforces it;
* :mod:`.download`: http(s) checkpoints, downloaded once into the torch hub cache;
* :mod:`.safe_read`: the one safe read (files and URLs), unwrapping, mmengine's loaders;
* :mod:`.diagnostics`: why a checkpoint does not fit a model;
* :mod:`.errors`: ``StateDict`` and ``CheckpointError``.

Nothing here imports a model (tests/test_package_structure.py).
"""
from .allow_list import mmengine_safe_globals
from .diagnostics import (check_model_checkpoint, open_model_checkpoint, short_keys,
                          strict_load_problems)
from .download import is_url, local_checkpoint_path, url_cache_path
from .errors import CheckpointError, StateDict
from .safe_read import read_checkpoint, unwrap_state_dict, use_safe_checkpoint_loaders

__all__ = [
    'CheckpointError', 'StateDict', 'read_checkpoint', 'unwrap_state_dict', 'short_keys',
    'strict_load_problems', 'check_model_checkpoint', 'mmengine_safe_globals', 'is_url',
    'url_cache_path', 'local_checkpoint_path', 'open_model_checkpoint',
    'use_safe_checkpoint_loaders',
]
