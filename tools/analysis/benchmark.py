"""Inference speed and memory of whole models (detector / segmentor / classifier), side by side.

Like mmdet's ``tools/analysis_tools/benchmark.py``, but without a dataset and for several
configs in one run: every model is built from its config through its registry (random
weights: the speed does not depend on them), and the same random batch of each requested
size goes through ``model.test_step`` (data preprocessor, forward, post-processing) after
``--warmup`` untimed calls. The models are timed round-robin (order rotated every repeat)
so machine noise hits them alike; ``--compare`` adds the twin to compare with, e.g. mmdet's
own RetinaNet-R50, and ratios to the first config are reported. On CUDA calls are timed with
CUDA events and peak memory is the growth of ``torch.cuda.max_memory_allocated`` over
what was resident (all models' weights) during a call.
``--mode tensor`` times the network alone (no preprocessing or post-processing).

Example (RetinaNet-PVT-Small vs RetinaNet-R50, batch 8, bf16 autocast)::

    python tools/analysis/benchmark.py configs/retinanet/pvt_small_fpn_1x_coco.py \
        --compare mmdet::retinanet/retinanet_r50_fpn_1x_coco.py \
        --shape 800 1344 --batch 8 --amp-dtype bf16 --repeat 10
"""
import argparse
import contextlib
import os
import statistics
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from pvt_mm.runner_options import AMP_DTYPES
from pvt_mm.config import build_from_config
from pvt_mm.flops import data_samples_for
from pvt_mm.timing import is_cuda, timed_call


def make_batch(scope: str, batch: int, shape: Tuple[int, int], device: str) -> Dict[str, Any]:
    """A ``test_step`` batch: uint8 CHW images plus data samples with image metadata."""
    inputs = [torch.randint(0, 256, (3, *shape), dtype=torch.uint8, device=device)
              for _ in range(batch)]
    samples = data_samples_for(scope, batch, shape)
    if samples is None:  # mmpretrain
        from mmpretrain.structures import DataSample
        samples = [DataSample(metainfo=dict(img_shape=shape, ori_shape=shape))
                   for _ in range(batch)]
    return dict(inputs=inputs, data_samples=samples)


def make_call(model: nn.Module, scope: str, shape: Tuple[int, int], batch: int, mode: str,
              device: str, amp_dtype: Optional[str]) -> Callable[[], None]:
    """One inference call of ``model`` on a fixed random batch (under autocast if asked)."""
    data = make_batch(scope, batch, shape, device)

    def autocast() -> contextlib.AbstractContextManager:
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type,
                              dtype=getattr(torch, AMP_DTYPES[amp_dtype]))

    if mode == 'tensor':
        processed = model.data_preprocessor(data, False)
        inputs, samples = processed['inputs'], processed['data_samples']

        def call() -> None:
            with torch.inference_mode(), autocast():
                model(inputs, samples, mode='tensor')
    else:
        def call() -> None:
            with torch.inference_mode(), autocast():
                model.test_step(data)
    return call



def benchmark(calls: Dict[str, Callable[[], None]], repeat: int, warmup: int,
              device: str) -> Dict[str, Dict[str, float]]:
    """Median latency (ms per batch), spread and CUDA peak memory of each call, interleaved."""
    names = list(calls)
    times: Dict[str, List[float]] = {name: [] for name in names}
    peaks: Dict[str, float] = {}
    for r in range(warmup + repeat):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            # 'cuda' and 'cuda:N' alike: CUDA events for the time, the peak on that GPU.
            measure = is_cuda(device) and r == warmup
            if measure:  # the first timed call: its peak above what was already resident
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            seconds = timed_call(calls[name], device)
            if r >= warmup:
                times[name].append(seconds)
            if measure:
                peaks[name] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    out = {}
    for name in names:
        median = statistics.median(times[name])
        out[name] = dict(latency_ms=median * 1e3, min_ms=min(times[name]) * 1e3,
                         max_ms=max(times[name]) * 1e3)
        if name in peaks:
            out[name]['peak_mib'] = peaks[name]
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='the model to benchmark (ratios are relative to it)')
    parser.add_argument('--compare', nargs='+', default=[], metavar='CONFIG',
                        help='configs to time beside it, e.g. '
                             'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
    parser.add_argument('--shape', nargs=2, type=int, action='append', metavar=('H', 'W'),
                        help='input size, repeatable (default 224 224 for classifiers, '
                             '512 512 for segmentors, 800 1333 for detectors)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=5, help='timed calls per size and model')
    parser.add_argument('--warmup', type=int, default=2, help='untimed calls per size and model')
    parser.add_argument('--mode', choices=('predict', 'tensor'), default='predict',
                        help='predict: test_step with pre/post-processing; tensor: network only')
    parser.add_argument('--amp-dtype', choices=sorted(AMP_DTYPES),
                        help='run under autocast to this dtype (default fp32)')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the first config\'s backbone (others stay eager)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, help='CPU threads (torch.set_num_threads)')
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    return parser.parse_args(argv)


def resolve_config(config: str) -> str:
    """A path, or ``mmdet::PATH`` / ``mmseg::PATH`` / ``mmpretrain::PATH`` in that package's
    installed configs (mmengine's own ``::`` convention for bases)."""
    if '::' not in config:
        if not os.path.isfile(config):
            sys.exit(f'error: config file {config!r} does not exist')
        return config
    import importlib.util
    package, _, rel = config.partition('::')
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f'error: {config!r}: {package!r} is no installed package (mmdet, mmseg, '
                 'mmpretrain); install it or give a config file path')
    path = os.path.join(spec.submodule_search_locations[0], '.mim', 'configs', rel)
    if not os.path.isfile(path):
        sys.exit(f'error: {config!r} is not among the installed {package} configs ({path})')
    return path


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    args = parse_args(argv)
    try:
        cuda = is_cuda(args.device)
    except RuntimeError:  # torch.device's own message names the bad string
        sys.exit(f'error: --device {args.device!r} is not a device; use cpu, cuda or cuda:N')
    if cuda and not torch.cuda.is_available():
        sys.exit(f'error: --device {args.device} but no CUDA GPU is visible; use --device cpu')
    if args.amp_dtype and not cuda and args.mode == 'predict':
        print('note: CPU autocast with post-processing may be slower than fp32', file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = [args.config, *args.compare]
    models, scopes = {}, {}
    for i, config in enumerate(configs):
        model, cfg = build_from_config(resolve_config(config), with_weights=False)
        if i == 0 and args.compile and hasattr(model, 'backbone'):
            model.backbone = torch.compile(model.backbone)
        name = os.path.splitext(os.path.basename(config.split('::')[-1]))[0]
        models[name] = model.to(args.device).eval()
        scopes[name] = cfg.get('default_scope', 'mmdet')
    first = next(iter(models))
    default = {'mmpretrain': (224, 224), 'mmseg': (512, 512)}.get(scopes[first], (800, 1333))
    shapes = [tuple(s) for s in (args.shape or [default])]
    print(f'Configs: {", ".join(configs)}; device {args.device}'
          f'{" " + torch.cuda.get_device_name(args.device) if cuda else ""}, '
          f'{torch.get_num_threads()} threads, torch {torch.__version__}, batch {args.batch}, '
          f'mode {args.mode}, {args.amp_dtype or "fp32"}'
          f'{", compiled backbone (first config)" if args.compile else ""}, median of '
          f'{args.repeat} interleaved calls after {args.warmup} warm-up')
    print('| model | input | latency median (ms) | min (ms) | max (ms) | images/s '
          f'| time / {first} | peak extra memory (MiB) |')
    print('|---|---|---|---|---|---|---|---|')
    results = []
    for shape in shapes:
        calls = {name: make_call(model, scopes[name], shape, args.batch, args.mode,
                                 args.device, args.amp_dtype)
                 for name, model in models.items()}
        res = benchmark(calls, args.repeat, args.warmup, args.device)
        for name, row in res.items():
            row.update(model=name, shape=list(shape), batch=args.batch,
                       fps=args.batch * 1e3 / row['latency_ms'],
                       ratio=row['latency_ms'] / res[first]['latency_ms'])
            results.append(row)
            peak = f'{row["peak_mib"]:.0f}' if 'peak_mib' in row else '-'
            print(f'| {name} | {shape[0]}x{shape[1]} | {row["latency_ms"]:.1f} | '
                  f'{row["min_ms"]:.1f} | {row["max_ms"]:.1f} | {row["fps"]:.2f} | '
                  f'{row["ratio"]:.2f} | {peak} |', flush=True)
    return results


if __name__ == '__main__':
    main()
