#!/usr/bin/env python
"""Evaluate a checkpoint of any pvt_mm model (COCO AP, mIoU or top-1, per the config).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl]
                                           [--show-dir DIR] [--cfg-options k=v ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_GPUS [args]
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
from pvt_mm.runner_options import (add_custom_hooks, add_runner_arguments, compile_for_test,
                        config_from_arguments, parse_runner_arguments)
from pvt_mm.data_checks import check_datasets
from pvt_mm.distributed import init_distributed, shutdown_distributed
from pvt_mm.evaluation import build_dump_metric, write_metrics


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description='Test a model with a PVT backbone')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file or http(s) URL (downloaded once '
                        'into the torch hub cache)')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--out', help="dump the predictions to this .pkl file (the library's "
                        'own dump: mmdet RLE masks, mmseg label maps; no ground truth)')
    parser.add_argument('--show-dir', help='save drawn predictions under this directory')
    add_runner_arguments(parser, cfg_example='test_dataloader.batch_size=2')
    return parser


def parse_args() -> argparse.Namespace:
    parser = build_parser()
    args = parse_runner_arguments(parser)
    if args.out and not args.out.endswith(('.pkl', '.pickle')):
        sys.exit('error: --out must end with .pkl or .pickle')
    return args


def enable_drawing(cfg: Config, show_dir: str) -> None:
    """Switch on the family's visualisation hook so test images are drawn to ``show_dir``."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        sys.exit('error: --show-dir needs a visualization hook in default_hooks')
    if hook['type'] == 'VisualizationHook':  # mmpretrain
        hook.update(enable=True, out_dir=show_dir)
    else:  # mmdet DetVisualizationHook, mmseg SegVisualizationHook
        hook['draw'] = True
        if 'DetVisualizationHook' in hook['type']:
            hook['test_out_dir'] = osp.abspath(show_dir)
        else:  # mmseg's hook draws every `interval`-th image (default 50): draw them all
            hook.setdefault('interval', 1)
            cfg.visualizer['save_dir'] = show_dir


def main() -> None:
    args = parse_args()
    cfg = config_from_arguments(args)
    try:  # fail early and safely (weights_only) on a missing, damaged or hostile file
        checkpoint, _ = open_model_checkpoint(args.checkpoint)
    except (FileNotFoundError, CheckpointError) as exc:
        sys.exit(f'error: {exc}')
    cfg.load_from = checkpoint
    try:
        check_datasets(cfg, splits=('test', ))
    except FileNotFoundError as exc:
        sys.exit(f'error: {exc}')
    if args.show_dir:
        enable_drawing(cfg, args.show_dir)
    # GPU input checks still in flight when the test ends are read (pvt_mm.hooks).
    add_custom_hooks(cfg, ('FiniteInputHook', ))
    init_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if args.compile:  # mmengine compiles only for train(): compile the test_step it calls
        compile_for_test(runner)
    if args.out:
        runner.test_evaluator.metrics.append(
            build_dump_metric(cfg.get('default_scope', 'mmdet'), args.out))
    metrics = runner.test()
    from mmengine.dist import is_main_process
    if is_main_process():  # machine-readable copy of the metrics
        write_metrics(metrics, osp.join(cfg.work_dir, 'test_metrics.json'))
    shutdown_distributed()


if __name__ == '__main__':
    main()
