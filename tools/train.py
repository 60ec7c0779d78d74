#!/usr/bin/env python
"""Train any pvt_mm model (mmdet detector, mmseg segmentor, mmpretrain classifier).

The config's ``default_scope`` picks the library; the flags follow mmdet's ``tools/train.py``:

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                                 [--amp-dtype {float16,bfloat16}] [--compile]
                                 [--auto-scale-lr] [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG NUM_GPUS [args]     # DDP (gloo on CPU-only machines)
"""
import argparse
import os.path as osp
import sys
import warnings

# mmengine imports pkg_resources to resolve `mmdet::` bases; its deprecation notice is noise.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from pvt_mm.checkpoint import CheckpointError, open_model_checkpoint
from pvt_mm.runner_options import (AMP_DTYPES, add_custom_hooks, add_runner_arguments,
                        config_from_arguments, parse_runner_arguments)
from pvt_mm.data_checks import check_datasets
from pvt_mm.distributed import init_distributed, shutdown_distributed
from pvt_mm.hooks import find_resumable_checkpoint, use_atomic_checkpoints

# Added to every run: RNG states travel with checkpoints (exact resume), a non-finite
# loss stops training before it can be checkpointed, and the GPU input checks still in
# flight are read when a train or val run ends.
SAFETY_HOOKS = ('RNGStateHook', 'FiniteLossHook', 'FiniteInputHook')


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description='Train a model with a PVT backbone')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (fp16 with a dynamic loss scale)')
    parser.add_argument('--amp-dtype', choices=sorted(AMP_DTYPES),
                        help='mixed-precision dtype (implies --amp; default float16)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (total batch) / auto_scale_lr.base_batch_size')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or (no value) from the latest one '
                        'in the work dir')
    add_runner_arguments(parser, cfg_example='train_cfg.max_epochs=1')
    return parser


def parse_args() -> argparse.Namespace:
    parser = build_parser()
    return parse_runner_arguments(parser)


def build_config(args: argparse.Namespace) -> Config:
    cfg = config_from_arguments(args)
    if args.auto_scale_lr:
        if not cfg.get('auto_scale_lr', {}).get('base_batch_size'):
            sys.exit('error: --auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        # The newest checkpoint that actually loads, even if `last_checkpoint` is stale.
        found = find_resumable_checkpoint(cfg.work_dir) if osp.isdir(cfg.work_dir) else None
        cfg.resume, cfg.load_from = found is not None, found
        if found is None:
            print(f'No checkpoint to resume in {cfg.work_dir}; starting from scratch.')
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    checkpoint_hook = cfg.get('default_hooks', {}).get('checkpoint')
    if checkpoint_hook is not None and checkpoint_hook.get('type') in ('CheckpointHook',
                                                                       'mmengine.CheckpointHook'):
        checkpoint_hook.type = 'AtomicCheckpointHook'  # last_checkpoint written atomically too
    add_custom_hooks(cfg, SAFETY_HOOKS)
    return cfg


def check_checkpoint(path: str) -> str:
    """Fail early, clearly and safely on a checkpoint that cannot be resumed/loaded.

    Returns:
        Its local file: ``path``, or for an http(s) URL the copy downloaded into the torch
        hub cache (where mmengine would look for it too).
    """
    try:
        local, _ = open_model_checkpoint(path)
    except (FileNotFoundError, CheckpointError) as exc:
        sys.exit(f'error: cannot use checkpoint for --resume/load_from: {exc}')
    return local


def main() -> None:
    args = parse_args()
    use_atomic_checkpoints()
    cfg = build_config(args)
    if cfg.get('load_from'):
        cfg.load_from = check_checkpoint(cfg.load_from)
    try:
        check_datasets(cfg, splits=('train', 'val'))
    except FileNotFoundError as exc:
        sys.exit(f'error: {exc}')
    init_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()
    shutdown_distributed()


if __name__ == '__main__':
    main()
