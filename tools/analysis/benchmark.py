"""Inference speed (FPS and median latency) of a detector / segmentor / classifier config.

Like mmdet's ``tools/analysis_tools/benchmark.py``, but without a dataset: the model is built
from the config through its registry (random weights: the speed does not depend on them),
and a random image of each requested size goes through ``model.test_step`` (data
preprocessor, forward, post-processing) after ``--warmup`` untimed calls. ``--mode tensor``
times the network alone (no preprocessing or post-processing).

Example::

    python tools/analysis/benchmark.py configs/retinanet/pvt_small_fpn_1x_coco.py \
        --shape 800 1333 --repeat 5
"""
import argparse
import statistics
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from pvt_mm.flops import data_samples_for
from pvt_mm.runtime import build_from_config


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


def benchmark(model: nn.Module, scope: str, shape: Tuple[int, int], batch: int, repeat: int,
              warmup: int, mode: str, device: str) -> Dict[str, float]:
    """Median latency (ms per batch) and throughput (images/s) of ``repeat`` timed calls."""
    data = make_batch(scope, batch, shape, device)
    if mode == 'tensor':
        processed = model.data_preprocessor(data, False)
        inputs, samples = processed['inputs'], processed['data_samples']

        def call() -> None:
            model(inputs, samples, mode='tensor')
    else:
        def call() -> None:
            model.test_step(data)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeat):
            if device == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
            call()
            if device == 'cuda':
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return dict(latency_ms=median * 1e3, fps=batch / median, min_ms=min(times) * 1e3,
                max_ms=max(times) * 1e3)


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--shape', nargs=2, type=int, action='append', metavar=('H', 'W'),
                        help='input size, repeatable (default 224 224 for classifiers, '
                             '512 512 for segmentors, 800 1333 for detectors)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=5, help='timed calls per size')
    parser.add_argument('--warmup', type=int, default=2, help='untimed calls per size')
    parser.add_argument('--mode', choices=('predict', 'tensor'), default='predict',
                        help='predict: test_step with pre/post-processing; tensor: network only')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, help='CPU threads (torch.set_num_threads)')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, cfg = build_from_config(args.config)
    scope = cfg.get('default_scope', 'mmdet')
    model.to(args.device)
    model.eval()
    default = {'mmpretrain': (224, 224), 'mmseg': (512, 512)}.get(scope, (800, 1333))
    shapes = [tuple(s) for s in (args.shape or [default])]
    print(f'Config: {args.config} (scope {scope}), device {args.device}, '
          f'{torch.get_num_threads()} threads, batch {args.batch}, mode {args.mode}, '
          f'median of {args.repeat} after {args.warmup} warm-up')
    print('| input | latency median (ms) | min (ms) | max (ms) | FPS |')
    print('|---|---|---|---|---|')
    results = []
    for shape in shapes:
        res = benchmark(model, scope, shape, args.batch, args.repeat, args.warmup, args.mode,
                        args.device)
        results.append(dict(shape=list(shape), **res))
        print(f'| {shape[0]}x{shape[1]} | {res["latency_ms"]:.1f} | {res["min_ms"]:.1f} | '
              f'{res["max_ms"]:.1f} | {res["fps"]:.2f} |', flush=True)
    return results


if __name__ == '__main__':
    main()
