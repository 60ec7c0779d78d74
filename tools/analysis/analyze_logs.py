#!/usr/bin/env python
"""Plot training curves from mmengine logs (mmdet's ``analyze_logs.py`` style).

    python tools/analysis/analyze_logs.py plot_curve WORK_DIR [WORK_DIR ...]
        [--keys loss bbox_mAP] [--legend A B] [--out curves.png] [--title T]

Each argument is a work directory written by ``tools/train.py`` (its latest
``<timestamp>/vis_data/scalars.json`` is read; one json object per line), a run directory
``<work_dir>/<timestamp>``, or a ``scalars.json`` file itself. A key matches a logged name
exactly or its last ``/`` component, so ``bbox_mAP`` finds ``coco/bbox_mAP``, ``mIoU``
finds ``mIoU`` and ``top1`` finds ``accuracy/top1``. Training scalars are plotted against
the iteration; validation metrics against the epoch (epoch-based loops) or iteration
(iteration-based loops), as mmengine logs their ``step``. One subplot per key, one line per
work directory. The PNG is written with matplotlib's Agg backend to a temporary name and
renamed.
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
from collections import OrderedDict
from typing import Dict, List, Tuple

from pvt_mm.cli import run_tool

# Scalars every train record carries that are not curves.
BOOKKEEPING = {'epoch', 'iter', 'step'}


class LogError(Exception):
    """Bad input: reported as a one-line error."""


def find_scalars(path: str) -> str:
    """Resolve a work dir / run dir / file to one ``scalars.json``."""
    if osp.isfile(path):
        return path
    if not osp.isdir(path):
        raise LogError(f'{path!r} does not exist')
    direct = osp.join(path, 'vis_data', 'scalars.json')
    if osp.isfile(direct):
        return direct
    runs = sorted(glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')))
    if not runs:
        raise LogError(f'no mmengine log in {path!r}: expected '
                       '<work_dir>/<timestamp>/vis_data/scalars.json (written by tools/train.py)')
    return runs[-1]  # timestamps sort chronologically: the latest run


def load_scalars(path: str) -> Tuple[List[dict], List[dict]]:
    """Split a ``scalars.json`` into training records (with ``iter``) and validation
    records (without); both keep mmengine's ``step``."""
    train, val = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LogError(f'{path}:{number} is not json ({exc.msg}); is this an mmengine '
                               'scalars.json?') from None
            if not isinstance(record, dict) or 'step' not in record:
                raise LogError(f'{path}:{number} has no "step"; is this an mmengine scalars.json?')
            (train if 'iter' in record else val).append(record)
    if not train and not val:
        raise LogError(f'{path} is empty')
    return train, val


def match_key(key: str, names) -> List[str]:
    """Logged names that ``key`` designates (exact, or equal to the last '/' part)."""
    if key in names:
        return [key]
    return sorted(n for n in names if n.split('/')[-1] == key)


def collect_curves(scalars: str, keys: List[str]) -> Dict[str, Tuple[str, list, list]]:
    """``{key: (x label, xs, ys)}`` for the keys this log has."""
    train, val = load_scalars(scalars)
    train_names = {k for r in train for k in r} - BOOKKEEPING
    val_names = {k for r in val for k in r} - BOOKKEEPING - {'time', 'data_time'}
    epoch_based = bool(train) and 'epoch' in train[0]
    curves = OrderedDict()
    for key in keys:
        matches = match_key(key, train_names)
        records, x_label = train, 'iter'
        if not matches:
            matches = match_key(key, val_names)
            records, x_label = val, 'epoch' if epoch_based else 'iter'
        for name in matches:
            points = [(r['step'], r[name]) for r in records
                      if isinstance(r.get(name), (int, float)) and r[name] == r[name]]
            if points:
                curves[name] = (x_label, [p[0] for p in points], [p[1] for p in points])
    return curves


def plot_curve(args: argparse.Namespace) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if args.legend and len(args.legend) != len(args.work_dirs):
        raise LogError(f'--legend has {len(args.legend)} names for {len(args.work_dirs)} logs')
    if not args.out.lower().endswith(('.png', '.pdf', '.svg', '.jpg')):
        raise LogError(f'--out must end with .png, .pdf, .svg or .jpg, got {args.out!r}')
    runs = []
    for index, path in enumerate(args.work_dirs):
        scalars = find_scalars(path)
        label = args.legend[index] if args.legend else osp.basename(osp.normpath(path))
        runs.append((label, scalars, collect_curves(scalars, args.keys)))
    names = list(OrderedDict.fromkeys(name for _, _, curves in runs for name in curves))
    if not names:
        available = set()
        for _, scalars, _ in runs:
            train, val = load_scalars(scalars)
            available |= {k for r in train + val for k in r} - BOOKKEEPING
        raise LogError(f'none of the keys {args.keys} is in the logs; they have: '
                       f'{", ".join(sorted(available))}')
    missing = [k for k in args.keys if not any(
        n == k or n.split('/')[-1] == k for n in names)]
    if missing:
        print(f'warning: no curve for {missing} in any log', file=sys.stderr)

    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        for label, _, curves in runs:
            if name in curves:
                x_label, xs, ys = curves[name]
                ax.plot(xs, ys, marker='o' if len(xs) < 30 else None, markersize=3, label=label)
                ax.set_xlabel(x_label)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    ext = osp.splitext(args.out)[1]
    tmp = f'{args.out}.tmp{ext}'
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, args.out)
    finally:
        plt.close(fig)
        if osp.exists(tmp):
            os.remove(tmp)
    return args.out


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description='Analyse mmengine training logs')
    sub = parser.add_subparsers(dest='task', required=True)
    curve = sub.add_parser('plot_curve', help='plot scalars (loss, AP, mIoU, top-1) over training')
    curve.add_argument('work_dirs', nargs='+', help='work dirs, run dirs or scalars.json files')
    curve.add_argument('--keys', nargs='+', default=['loss'],
                       help='scalars to plot, e.g. loss bbox_mAP segm_mAP mIoU top1')
    curve.add_argument('--legend', nargs='+', help='one name per log (default: folder names)')
    curve.add_argument('--title', help='figure title')
    curve.add_argument('--out', default='curves.png', help='output image')
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: f'wrote {plot_curve(args)}', LogError)


if __name__ == '__main__':
    sys.exit(main())
