"""Starting and stopping the process group of a distributed run where mmengine cannot.

mmengine 0.10.7's ``pytorch`` launcher calls ``torch.cuda.set_device`` before creating the
process group, so DDP cannot start on a machine without a GPU: :func:`init_distributed`
creates a gloo group itself in that case (``Runner`` then skips its own ``init_dist``), and
:func:`shutdown_distributed` tears it down before the interpreter exits.
"""
import os
from datetime import timedelta

import torch
import torch.distributed as dist


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


def shutdown_distributed() -> None:
    """Tear the process group down before the interpreter exits: left to interpreter exit,
    gloo's threads can abort the process (``terminate called without an active
    exception``) after a run that succeeded, turning it into a failed job."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


__all__ = ['init_distributed', 'shutdown_distributed']
