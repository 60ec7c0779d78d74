"""Benchmark pvt_mm's PVT against mmdet's PyramidVisionTransformer and ResNet-50, side by side.

``--arch tiny|small|medium|large`` compares PVT v1 with mmdet's ``PyramidVisionTransformer``,
``--arch b0 ... b5`` PVT v2 with mmdet's ``PyramidVisionTransformerV2`` (mmdet has no linear
SRA, so ``b2_li`` has no mmdet twin). One process, one run: the three backbones are built,
mmdet's PVT gets the SAME weights as pvt_mm's (pvt_mm weights -> official release layout ->
mmdet's own ``pvt_convert``, which reads v1 and v2 releases -> strict load) and the outputs
are compared first, in true fp32 (TF32 off for the check: cuDNN and
cuBLAS would otherwise round fp32 convolutions and matmuls to 10-bit mantissas on Ampere+
GPUs); a mismatch aborts the run. Then every (size, batch, mode, dtype) case is timed
round-robin over the models (one call of each per repeat, order rotated every repeat), so
machine noise hits all models alike, and medians and ratios are reported. On CUDA each
call is timed with CUDA events (GPU time between two points of the stream, the host
synchronised once per call only to read them); TF32 stays at torch's defaults while timing.
``--compile`` times ``torch.compile(pvt_mm)`` against the other two models eager. Peak memory is measured in a fresh child process per model and case
(CPU: growth of the peak resident set over a warmed-up baseline, with glibc told to map
and unmap every tensor-sized block so that the peak follows live memory; GPU:
``torch.cuda.max_memory_allocated``).

Modes: ``infer`` is a forward under ``torch.inference_mode``; ``train`` is one training
step without the optimizer: forward in train mode + backward of the mean of all outputs.

Example::

    python tools/analysis/benchmark_backbone.py --shape 512 512 --shape 800 1333 \
        --modes infer train --repeat 3 --json bench.json
"""
import argparse
import datetime
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from pvt_mm.timing import exact_fp32, interleaved

MODELS = ('pvt_mm', 'mmdet_pvt', 'resnet50')
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


# --------------------------------------------------------------------------- models
def build_models(arch: str, device: str, seed: int = 0,
                 only: Optional[str] = None) -> Dict[str, nn.Module]:
    """pvt_mm's PVT, mmdet's PVT with the same weights, and mmdet's ResNet-50.

    Args:
        arch: pvt_mm arch preset: v1 (``'tiny'`` ...) or v2 (``'b0'`` ... ``'b5'``).
        device: ``'cpu'`` or ``'cuda'``.
        seed: Seed of pvt_mm's random initialisation (mmdet's PVT copies it).
        only: Build just this one of :data:`MODELS` (the memory children).

    Raises:
        ValueError: an arch mmdet cannot express (``'b2_li'``: mmdet has no linear SRA).
    """
    from mmdet.models.backbones import ResNet
    from mmdet.models.backbones.pvt import (PyramidVisionTransformer,
                                            PyramidVisionTransformerV2, pvt_convert)
    from pvt_mm.models.backbones import archs
    from pvt_mm.models.backbones.pvt_convert import to_official_keys
    from pvt_mm.registry import PUBLIC_MODELS

    if arch not in archs.ARCH_TABLE:
        raise ValueError(f'Unknown arch {arch!r}; choose one of {sorted(archs.ARCH_TABLE)}.')
    row = archs.arch_row(arch)
    if row.fields['linear_sra']:
        raise ValueError(f'mmdet 3.3 has no linear SRA, so PVT v2-{arch} has no mmdet twin to '
                         'compare with; benchmark b2 (the same model with SRA) instead.')
    if only == 'resnet50':
        resnet = ResNet(depth=50).to(device)
        resnet.eval()  # mmdet's ResNet.train() returns None: no chaining
        return dict(resnet50=resnet)
    v2 = row.version == 'v2'
    torch.manual_seed(seed)
    ours = PUBLIC_MODELS[row.backbone_type](arch=arch)  # the row's backbone type
    ours.init_weights()
    table = ours.arch
    common = dict(embed_dims=table['embed_dims'][0], num_layers=list(table['depths']),
                  num_heads=list(table['num_heads']), sr_ratios=list(table['sr_ratios']),
                  mlp_ratios=list(table['mlp_ratios']))
    if v2:  # overlapping 7/4/3, 3/2/1 patch embeddings, stage norms, conv FFN: fixed by the class
        ref = PyramidVisionTransformerV2(**common)
    else:
        ref = PyramidVisionTransformer(patch_sizes=list(table['patch_sizes']),
                                       strides=list(table['patch_sizes']), **common)
    if [ref.embed_dims * h for h in ref.num_heads] != list(table['embed_dims']):
        raise ValueError(f'mmdet PVT cannot express embed_dims {table["embed_dims"]}')
    use_official_norm_eps(ref)
    # Our keys -> the official release's (ours, pvt_convert.py) -> mmdet's (mmdet's own
    # converter): no third mapping to keep in step, and the check below also proves that
    # our official-format export is what mmdet's loader reads.
    converted = pvt_convert(to_official_keys(ours.state_dict(), stage_norms=table['stage_norm']))
    result = ref.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys, result
    # torch's default init is fine for timing; mmdet's init_weights only adds log noise.
    models = dict(pvt_mm=ours, mmdet_pvt=ref, resnet50=ResNet(depth=50))
    if only is not None:
        models = {only: models[only]}
    for model in models.values():
        model.to(device)
        model.eval()
    return models


def mmdet_name(arch: str) -> str:
    """The mmdet class that ``arch`` is compared with."""
    from pvt_mm.models.backbones import archs
    return ('PyramidVisionTransformerV2' if archs.arch_row(arch).version == 'v2'
            else 'PyramidVisionTransformer')


def use_official_norm_eps(mmdet_pvt: nn.Module) -> nn.Module:
    """Give mmdet's PVT (v1 or v2) the official LayerNorm eps where it differs: mmdet uses
    1e-6 in every norm, the official PVT v1 and v2 (and pvt_mm) torch's default 1e-5 in the
    patch embeddings and the attention reductions. Same model as pvt_mm's then, to fp32
    rounding; unchanged, its outputs differ by up to ~1e-4 (about 3e-5 relative).

    Args:
        mmdet_pvt: An mmdet ``PyramidVisionTransformer`` or ``PyramidVisionTransformerV2``
            (changed in place and returned).
    """
    for name, module in mmdet_pvt.named_modules():
        if isinstance(module, nn.LayerNorm) and (
                name.endswith('attn.norm') or re.fullmatch(r'layers\.\d+\.0\.norm', name)):
            module.eps = 1e-5
    return mmdet_pvt


def check_equivalence(models: Dict[str, nn.Module], device: str,
                      size: Tuple[int, int] = (224, 288), atol: float = 1e-4,
                      rtol: float = 1e-4) -> float:
    """Compare pvt_mm's and mmdet's PVT outputs in exact fp32; raise if they differ.

    Args:
        models: :func:`build_models`'s dict (``pvt_mm`` and ``mmdet_pvt`` are compared).
        device: Where the models are.
        size: Input ``(H, W)`` of the batch of 2 random images.
        atol, rtol: Tolerances of ``torch.allclose`` per output map.

    Returns:
        The largest absolute difference over the four maps.
    """
    torch.manual_seed(1)
    x = torch.randn(2, 3, *size, device=device)
    ours, ref = models['pvt_mm'].eval(), models['mmdet_pvt'].eval()
    with torch.inference_mode(), exact_fp32():
        a, b = ours(x), ref(x)
    if len(a) != len(b):
        raise RuntimeError(f'pvt_mm returns {len(a)} maps, mmdet {len(b)}')
    worst = 0.0
    for i, (u, v) in enumerate(zip(a, b)):
        if u.shape != v.shape:
            raise RuntimeError(f'Stage {i}: pvt_mm shape {tuple(u.shape)} != mmdet {tuple(v.shape)}')
        diff = (u - v).abs().max().item()
        worst = max(worst, diff)
        if not torch.allclose(u, v, atol=atol, rtol=rtol):
            raise RuntimeError(f'Stage {i}: pvt_mm and mmdet PVT disagree with the same weights '
                               f'(max |diff| {diff:.3g}); the benchmark would compare different '
                               'models, aborting.')
    return worst


# --------------------------------------------------------------------------- steps
def make_step(model: nn.Module, x: Tensor, mode: str, dtype: str, device: str) -> Callable[[], None]:
    """A closure running one inference call or one training step (forward + backward)."""
    amp = DTYPES[dtype] if dtype != 'fp32' else None

    def autocast():
        return torch.autocast(device_type=device, dtype=amp, enabled=amp is not None)

    if mode == 'infer':
        def step() -> None:
            with torch.inference_mode(), autocast():
                model(x)
    elif mode == 'train':
        def step() -> None:
            model.zero_grad(set_to_none=True)
            with autocast():
                outs = model(x)
            sum(o.float().mean() for o in outs).backward()
    else:
        raise ValueError(f'Unknown mode {mode!r}')
    return step


def set_mode(model: nn.Module, mode: str) -> None:
    model.train(mode == 'train')



def time_case(models: Dict[str, nn.Module], shape: Tuple[int, int], batch: int, mode: str,
              dtype: str, device: str, warmup: int, repeat: int) -> Dict[str, List[float]]:
    """Seconds per call of each model, interleaved round-robin (order rotated each repeat)."""
    x = torch.randn(batch, 3, *shape, device=device)
    names = list(models)
    steps = {}
    for name in names:
        set_mode(models[name], mode)
        steps[name] = make_step(models[name], x, mode, dtype, device)
    times = interleaved(steps, warmup, repeat, device)
    for name in names:
        models[name].zero_grad(set_to_none=True)
        models[name].eval()
    return times


# --------------------------------------------------------------------------- memory
def _rss_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def memory_child(spec: dict) -> dict:
    """Run in a fresh process: peak extra memory (MiB) of one step of one model."""
    torch.set_num_threads(spec['threads'])
    device = spec['device']
    model = build_models(spec['arch'], device, only=spec['model'])[spec['model']]
    if spec.get('compile') and spec['model'] == 'pvt_mm':
        model = torch.compile(model)
    gc.collect()
    x = torch.randn(spec['batch'], 3, *spec['shape'], device=device)
    set_mode(model, spec['mode'])
    step = make_step(model, x, spec['mode'], spec['dtype'], device)
    step()  # warm-up: one-time allocations (kernels, thread pools) leave the baseline
    model.zero_grad(set_to_none=True)
    gc.collect()
    if device == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        method = 'torch.cuda.max_memory_allocated'
    else:
        base = _rss_kib('VmRSS')
        try:  # writing 5 resets the peak-RSS high-water mark (Linux >= 4.0)
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
            method = 'VmHWM - VmRSS'
        except OSError:
            method = 'VmHWM - VmRSS (high-water mark not resettable: includes warm-up)'
        step()
        peak = (_rss_kib('VmHWM') - base) * 1024
    return dict(peak_mib=peak / 2**20, method=method)


def measure_memory(spec: dict) -> Optional[dict]:
    cmd = [sys.executable, os.path.abspath(__file__), '--memory-child', json.dumps(spec)]
    env = dict(os.environ)
    if spec['device'] == 'cpu':
        # glibc otherwise serves tensors under its adaptive mmap threshold (up to 32 MiB)
        # from the heap and keeps freed blocks, so the peak RSS would depend on what the
        # warm-up call left behind. A fixed 64 KiB threshold maps every tensor-sized block
        # and returns it on free: the high-water mark then follows live memory (measured
        # stable to 1 MiB over repeats, where the default allocator varied by 80 MiB).
        env.update(MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='0')
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
    if proc.returncode or not lines:
        print(f'memory child for {spec["model"]} failed:\n{proc.stderr[-2000:]}', file=sys.stderr)
        return None
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- report
def machine_info(device: str) -> dict:
    info = dict(
        date=datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
        host=platform.node(), platform=platform.platform(), python=platform.python_version(),
        torch=torch.__version__, device=device, threads=torch.get_num_threads(),
        cpu_count=os.cpu_count())
    try:
        with open('/proc/cpuinfo') as f:
            info['cpu'] = next(ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name'))
    except (OSError, StopIteration):
        info['cpu'] = platform.processor()
    if device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
    try:
        import mmdet
        info['mmdet'] = mmdet.__version__
    except ImportError:
        pass
    return info


def format_table(rows: List[dict]) -> str:
    head = ('| input | batch | mode | dtype | pvt_mm (ms) | mmdet PVT (ms) | ResNet-50 (ms) '
            '| time ours/mmdet | time ours/R50 | pvt_mm mem (MiB) | mmdet PVT mem (MiB) '
            '| R50 mem (MiB) | mem ours/mmdet | mem ours/R50 |')
    lines = [head, '|' + '---|' * head.count(' | ')]

    def fmt(value: Optional[float], spec: str) -> str:
        return '-' if value is None else format(value, spec)

    for row in rows:
        t, m = row['median_ms'], row.get('peak_mib', {})
        lines.append(
            f"| {row['shape'][0]}x{row['shape'][1]} | {row['batch']} | {row['mode']} | "
            f"{row['dtype']} | {t['pvt_mm']:.0f} | {t['mmdet_pvt']:.0f} | {t['resnet50']:.0f} | "
            f"{row['time_ratio_vs_mmdet']:.2f} | {row['time_ratio_vs_resnet50']:.2f} | "
            f"{fmt(m.get('pvt_mm'), '.0f')} | {fmt(m.get('mmdet_pvt'), '.0f')} | "
            f"{fmt(m.get('resnet50'), '.0f')} | {fmt(row.get('mem_ratio_vs_mmdet'), '.2f')} | "
            f"{fmt(row.get('mem_ratio_vs_resnet50'), '.2f')} |")
    return '\n'.join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    from pvt_mm.models.backbones import archs
    parser.add_argument('--arch', default='small',
                        help=f'pvt_mm arch preset: v1 {"/".join(archs.names("v1"))} (vs mmdet '
                        f'PyramidVisionTransformer) or v2 {"/".join(archs.names("v2"))} (vs '
                        'PyramidVisionTransformerV2; not the linear-SRA ones); default small')
    parser.add_argument('--shape', nargs=2, type=int, action='append', metavar=('H', 'W'),
                        help='input size, repeatable (default 512 512 and 800 1333)')
    parser.add_argument('--batch-sizes', nargs='+', type=int, default=[1])
    parser.add_argument('--modes', nargs='+', choices=('infer', 'train'), default=['infer', 'train'])
    parser.add_argument('--dtypes', nargs='+', choices=tuple(DTYPES), default=['fp32'],
                        help='fp32, or autocast to bf16 / fp16')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        choices=('cpu', 'cuda'))
    parser.add_argument('--repeat', type=int, default=3, help='timed calls per model and case')
    parser.add_argument('--warmup', type=int, default=1, help='untimed calls per model and case')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(),
                        help='CPU threads (torch.set_num_threads)')
    parser.add_argument('--compile', action='store_true',
                        help='time torch.compile(pvt_mm) (mmdet PVT and ResNet-50 stay eager)')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory children')
    parser.add_argument('--json', help='also write all results to this JSON file')
    parser.add_argument('--memory-child', help=argparse.SUPPRESS)
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> List[dict]:
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return []
    torch.set_num_threads(args.threads)
    shapes = [tuple(s) for s in (args.shape or [(512, 512), (800, 1333)])]
    info = machine_info(args.device)
    try:
        models = build_models(args.arch, args.device)
    except ValueError as exc:
        sys.exit(f'error: {exc}')
    ref_name = mmdet_name(args.arch)
    max_diff = check_equivalence(models, args.device)
    print(f'pvt_mm PVT-{args.arch} == mmdet {ref_name} with the same weights '
          f'(fp32, max |diff| {max_diff:.2e}): OK')
    if args.compile:
        models['pvt_mm'] = torch.compile(models['pvt_mm'])
    rows = []
    for shape in shapes:
        for batch in args.batch_sizes:
            for mode in args.modes:
                for dtype in args.dtypes:
                    times = time_case(models, shape, batch, mode, dtype, args.device,
                                      args.warmup, args.repeat)
                    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
                    row = dict(shape=list(shape), batch=batch, mode=mode, dtype=dtype,
                               times_ms={k: [t * 1e3 for t in v] for k, v in times.items()},
                               median_ms=med,
                               time_ratio_vs_mmdet=med['pvt_mm'] / med['mmdet_pvt'],
                               time_ratio_vs_resnet50=med['pvt_mm'] / med['resnet50'])
                    if not args.no_memory:
                        peaks = {}
                        for name in MODELS:
                            res = measure_memory(dict(
                                model=name, arch=args.arch, device=args.device,
                                shape=list(shape), batch=batch, mode=mode, dtype=dtype,
                                threads=args.threads, compile=args.compile))
                            if res is not None:
                                peaks[name] = res['peak_mib']
                                row['memory_method'] = res['method']
                        row['peak_mib'] = peaks
                        for other, key in (('mmdet_pvt', 'mem_ratio_vs_mmdet'),
                                           ('resnet50', 'mem_ratio_vs_resnet50')):
                            if peaks.get(other) and 'pvt_mm' in peaks:  # 0 MiB: too small to see
                                row[key] = peaks['pvt_mm'] / peaks[other]
                    rows.append(row)
                    print(f'{shape[0]}x{shape[1]} b{batch} {mode} {dtype}: ' + ', '.join(
                        f'{k} {v:.0f} ms' for k, v in med.items())
                        + f'; ours/mmdet {row["time_ratio_vs_mmdet"]:.2f}, '
                        f'ours/R50 {row["time_ratio_vs_resnet50"]:.2f}', flush=True)
    print()
    print(f'Machine: {info["cpu"]} ({info["cpu_count"]} cores, {info["threads"]} threads), '
          f'device {info["device"]}{" " + info["gpu"] if "gpu" in info else ""}, '
          f'torch {info["torch"]}, mmdet {info.get("mmdet")}, date {info["date"]}')
    print(f'PVT-{args.arch} (pvt_mm{", torch.compile" if args.compile else ""}) vs mmdet '
          f'{ref_name} (same weights, eager) vs mmdet ResNet-50; median of {args.repeat} interleaved calls after {args.warmup} warm-up; '
          'ratio < 1 means pvt_mm is faster / leaner.')
    if rows and 'memory_method' in rows[0]:
        print(f'Peak memory: extra memory of one call in a fresh process per model '
              f'({rows[0]["memory_method"]}).')
    print(format_table(rows))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(machine=info, arch=args.arch, mmdet_model=ref_name,
                           max_abs_diff=max_diff, compile=args.compile,
                           repeat=args.repeat, warmup=args.warmup, results=rows), f, indent=2)
        print(f'Wrote {args.json}')
    return rows


if __name__ == '__main__':
    main()
