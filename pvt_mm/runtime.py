"""Runtime set-up shared by the training and testing entry points (``tools/``).

Two things mmengine 0.10.7 needs help with on today's stack:

* torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine's own training
  checkpoints hold a few non-tensor types (message hub history buffers, numpy scalars);
  ``allow_mmengine_checkpoints`` allow-lists exactly those, keeping safe loading on.
* mmengine's ``pytorch`` launcher calls ``torch.cuda.set_device`` before creating the
  process group, so DDP cannot start on a machine without a GPU. ``init_distributed``
  creates a gloo group itself in that case; ``Runner`` then skips its own ``init_dist``.
"""
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from .checkpoint import mmengine_safe_globals


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read mmengine checkpoints (resume, load_from)."""
    torch.serialization.add_safe_globals(mmengine_safe_globals())


def init_distributed(cfg, launcher: str) -> None:
    """Start a gloo process group for CPU-only DDP; with a GPU mmengine does it itself.

    Args:
        cfg: The mmengine config; its ``env_cfg.dist_cfg.backend`` is switched to gloo.
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
    """
    if launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return
    if launcher != 'pytorch':
        raise RuntimeError(f'launcher={launcher!r} without a GPU is not supported; use '
                           'tools/dist_train.sh (torchrun, launcher=pytorch) for CPU DDP.')
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch needs {missing} in the environment; start it with '
                           'tools/dist_train.sh or torchrun.')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    timeout = cfg.env_cfg.dist_cfg.get('timeout', 1800)
    dist.init_process_group(backend='gloo', timeout=timedelta(seconds=timeout))
    # CPU modules take no device_ids in DDP.
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper.setdefault('device_ids', None)
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
