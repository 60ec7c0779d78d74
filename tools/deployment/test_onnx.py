#!/usr/bin/env python
"""Evaluate an exported ONNX file with ONNX Runtime on the config's test set, printing the
config's metric as tools/test.py does (COCO bbox AP, mIoU or top-1).

    python tools/deployment/test_onnx.py CONFIG FILE.onnx [--work-dir DIR] [--threads N]
        [--out preds.pkl] [--cfg-options k=v ...]
"""
import argparse
import os.path as osp
import sys
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmengine.runner import Runner

from pvt_mm.capabilities import ONNX_EXPORT, exit_unless

exit_unless(ONNX_EXPORT)  # before pvt_mm.deploy, which needs the exporter's torch
from pvt_mm.deploy import DeployError
from pvt_mm.deploy.evaluate import ORTModel
from pvt_mm.evaluation import build_dump_metric, write_metrics
from pvt_mm.config import load_config
from pvt_mm.data_checks import check_datasets
from pvt_mm.cli import add_cfg_options


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description='Evaluate an ONNX file with ONNX Runtime')
    parser.add_argument('config', help='the config the file was exported from')
    parser.add_argument('onnx', help='the .onnx file (exported with --part model)')
    parser.add_argument('--work-dir', help='where logs and test_metrics.json go')
    parser.add_argument('--out', help='dump the predictions to this .pkl file (as tools/test.py)')
    parser.add_argument('--threads', type=int, help='ONNX Runtime threads (default: torch\'s)')
    add_cfg_options(parser, example='test_dataloader.batch_size=2')
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if not osp.isfile(args.onnx):
        sys.exit(f'error: ONNX file {args.onnx!r} does not exist')
    try:
        cfg = load_config(args.config, args.cfg_options, args.work_dir, 'none')
        check_datasets(cfg, splits=('test', ))
    except FileNotFoundError as exc:
        sys.exit(f'error: {exc}')
    cfg.load_from = None
    runner = Runner.from_cfg(cfg)
    try:
        runner.model = ORTModel(args.onnx, runner.model, num_threads=args.threads)
    except DeployError as exc:
        sys.exit(f'error: {exc}')
    if args.out:
        if not args.out.endswith(('.pkl', '.pickle')):
            sys.exit('error: --out must end with .pkl or .pickle')
        # The library's own dump, as tools/test.py --out writes it.
        runner.test_evaluator.metrics.append(
            build_dump_metric(cfg.get('default_scope', 'mmdet'), args.out))
    metrics = runner.test()
    write_metrics(metrics, osp.join(cfg.work_dir, 'test_metrics.json'))


if __name__ == '__main__':
    main()
