#!/usr/bin/env python
"""ONNX Runtime vs PyTorch eager on the CPU, side by side in one run.

    python tools/deployment/benchmark_onnx.py CONFIG --shape H W [--part backbone|model]
        [--arch ARCH] [--repeat 10] [--warmup 2] [--threads N] [--profile] [--json F]
        [--checkpoint F] [--save-onnx F | --onnx F] [--openvino]

Exports the config's model (``--checkpoint``'s weights, else random ones from ``--seed``:
speed does not depend on them, but a detector's comparison and NMS need detections, so
``--part model`` of a detector needs ``--checkpoint``; ``--arch`` swaps the backbone's arch, e.g. ``small`` or ``b2``; ``--save-onnx`` keeps
the file, which a second run at another ``--shape`` reuses with ``--onnx``), checks the
file against PyTorch at ``--shape``, then times both engines interleaved (order alternating every repeat), with
the same number of threads, and reports medians and the time ratio ORT / PyTorch.
PyTorch runs pvt_mm's own inference path (``inference_mode``; FFN chunking as configured);
for ``--part model`` a detector runs ``model.predict`` (pre-processed batch in, results
out) on both sides. Peak memory is the growth of the peak resident set over a warmed-up
baseline in a fresh process per engine (glibc mapping every block over 64 KiB, so freed
memory leaves the resident set). ``--profile`` writes ONNX Runtime's profile and prints
the operators that take the time. ``--openvino`` adds OpenVINO (CPU, fp32, latency hint,
the same threads) on the same file as a third engine, checked against ONNX Runtime first;
it needs ``pip install "openvino>=2026.4"`` (2025.3 cannot read opset 23's ``Attention``).
"""
import argparse
import collections
import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import torch

OPENVINO_HELP = ('--openvino needs OpenVINO 2026.4 or newer: pip install "openvino>=2026.4" '
                 "(2025.3 cannot read opset 23's Attention op)")


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by tests/test_docs.py to check the documented commands."""
    parser = argparse.ArgumentParser(description='ONNX Runtime vs PyTorch on the CPU')
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, default=(512, 512), metavar=('H', 'W'))
    parser.add_argument('--part', choices=('backbone', 'model'), default='backbone')
    parser.add_argument('--arch', help="backbone arch instead of the config's (e.g. small, b2)")
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--onnx', help='use this file (exported by --save-onnx with the same '
                        'config, --arch, --part and --seed) instead of exporting')
    parser.add_argument('--save-onnx', help='write the export to this file')
    parser.add_argument('--attention', choices=('onnx', 'ort'), default='onnx',
                        help="export's attention: ONNX Attention or ONNX Runtime's "
                        'MultiHeadAttention (see pvt_mm.deploy.attention)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random weights')
    parser.add_argument('--image', help='time (and compare) on this image, resized to --shape '
                        'and pre-processed by the config (default: random normal pixels; a '
                        'trained detector finds nothing in those)')
    parser.add_argument('--checkpoint', help='trained weights (a detector needs them for '
                        '--part model: random weights detect nothing, so NMS would not run '
                        'and there would be no detections to compare)')
    parser.add_argument('--profile', action='store_true', help="ONNX Runtime's profiler")
    parser.add_argument('--no-memory', action='store_true', help='skip the memory children')
    parser.add_argument('--json', help='write every timing to this file')
    parser.add_argument('--openvino', action='store_true',
                        help='also time OpenVINO on the same file (pip install openvino)')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    return parser.parse_args(argv)


def build(args):
    from pvt_mm.deploy import load_model
    options = {'model.backbone.arch': args.arch} if args.arch else None
    torch.manual_seed(args.seed)  # the same weights in every run and child process
    model, cfg = load_model(args.config, args.checkpoint, cfg_options=options)
    return model, cfg


class OpenVINOSession:
    """An OpenVINO CPU compiled model of an exported file with :class:`ORTSession`'s
    members, so that the ONNX Runtime runners (their input checks, the detector's
    ``predict`` unpacking) run on it unchanged: fp32 (OpenVINO would pick bf16 on CPUs
    that have it), latency hint. Exits with the fix when OpenVINO cannot read the file.

    Args:
        path: The exported ``.onnx`` file.
        num_threads: OpenVINO's ``INFERENCE_NUM_THREADS`` (the other engines' threads).
    """

    def __init__(self, path: str, num_threads: int) -> None:
        import openvino as ov
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as exc:  # 2025.3: "does not support ... Attention"
            lines = str(exc).splitlines() or ['']
            reason = next((ln for ln in lines if 'not support' in ln), lines[-1])
            sys.exit(f'error: OpenVINO {ov.__version__} cannot read {path}: {reason}\n'
                     f'{OPENVINO_HELP}')
        compiled = core.compile_model(model, 'CPU', {
            'INFERENCE_NUM_THREADS': num_threads, 'PERFORMANCE_HINT': 'LATENCY',
            'INFERENCE_PRECISION_HINT': 'f32'})
        self.request = compiled.create_infer_request()
        self.outputs = compiled.outputs
        self.input_names = [port.get_any_name() for port in compiled.inputs]
        self.output_names = [port.get_any_name() for port in compiled.outputs]
        self.channels = compiled.inputs[0].get_partial_shape()[1].get_length()

    def run(self, feeds: dict) -> list:
        results = self.request.infer(feeds)
        return [results[out] for out in self.outputs]


def openvino_runner(path: str, num_threads: int, detector: bool = False):
    """:class:`pvt_mm.deploy.ORTRunner` (or, for a RetinaNet file, ``ORTDetector``) over
    an :class:`OpenVINOSession` of ``path``."""
    from pvt_mm.deploy import ORTDetector, ORTRunner
    return (ORTDetector if detector else ORTRunner)(OpenVINOSession(path, num_threads))


ENGINES = ('pytorch', 'onnxruntime', 'openvino')


def input_batch(args, model) -> torch.Tensor:
    """The timed batch: ``--image`` resized to ``--shape`` through the config's data
    preprocessor (:func:`pvt_mm.deploy.verify.image_batch`), ``--batch`` times, or random
    normal pixels (seed 0)."""
    if not args.image:
        torch.manual_seed(0)
        return torch.randn(args.batch, 3, *args.shape)
    from pvt_mm.deploy import DeployError
    from pvt_mm.deploy.verify import image_batch
    try:
        return image_batch(model, args.image, tuple(args.shape), args.batch)
    except DeployError as exc:
        sys.exit(f'error: {exc}')


def make_steps(args, model, onnx_path, engines=ENGINES) -> dict:
    """Zero-argument callables per engine (``--openvino`` adds ``'openvino'``), on the same
    batch (:func:`input_batch`)."""
    from pvt_mm.deploy import ORTDetector, ORTRunner
    engines = [e for e in engines if e != 'openvino' or args.openvino]
    images = input_batch(args, model)
    detector = args.part == 'model'
    runners = {}
    if 'onnxruntime' in engines:
        cls = ORTDetector if detector else ORTRunner
        runners['onnxruntime'] = cls(onnx_path, num_threads=args.threads)
    if 'openvino' in engines:
        runners['openvino'] = openvino_runner(onnx_path, args.threads, detector)
    if not detector:
        backbone = model.backbone

        def torch_step():
            with torch.inference_mode():
                backbone(images)
        steps = {name: functools.partial(r.run, images) for name, r in runners.items()}
        return dict(pytorch=torch_step, **steps)
    from mmdet.structures import DetDataSample
    meta = dict(img_shape=tuple(args.shape), batch_input_shape=tuple(args.shape),
                scale_factor=(1.0, 1.0), ori_shape=tuple(args.shape))

    def samples():
        return [DetDataSample(metainfo=meta) for _ in range(args.batch)]

    def torch_step():
        with torch.inference_mode():
            model.predict(images, samples())
    steps = {name: (lambda r=r: r.predict(images, samples())) for name, r in runners.items()}
    return dict(pytorch=torch_step, **steps)


def openvino_vs_ort(args, onnx_path: str) -> str:
    """OpenVINO's outputs against ONNX Runtime's on one random batch at ``--shape``: integer
    outputs equal, float ones by max |diff| / max |ONNX Runtime|."""
    import numpy as np

    from pvt_mm.deploy import ORTRunner
    from pvt_mm.deploy import ORTDetector
    images = torch.randn(args.batch, 3, *args.shape)
    runner = ORTRunner(onnx_path, num_threads=args.threads)
    extra = ORTDetector.whole_image_inputs(images) if len(runner.input_names) > 1 else ()
    ort_outs = runner.run(images, *extra)
    ov_outs = openvino_runner(onnx_path, args.threads).run(images, *extra)
    parts = []
    for ref, out in zip(ort_outs, ov_outs):
        if ref.shape != out.shape:
            parts.append(f'shape {out.shape} != {ref.shape}')
        elif np.issubdtype(ref.dtype, np.integer):
            parts.append('equal' if np.array_equal(ref, out) else 'DIFFERENT')
        else:
            parts.append(f'{np.abs(ref - out).max() / max(np.abs(ref).max(), 1e-12):.1e}')
    return ', '.join(parts)


def _rss_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(field + ':'))


def memory_child(args) -> dict:
    torch.set_num_threads(args.threads)
    model, _ = build(args)
    step = make_steps(args, model, args.onnx, engines=(args.child, ))[args.child]
    step()  # warm-up: one-time allocations leave the baseline
    base = _rss_kib('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the high-water mark
    step()
    return dict(peak_mib=(_rss_kib('VmHWM') - base) / 1024)


def measure_memory(argv, engine: str, onnx_path: str):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='0')
    cmd = [sys.executable, os.path.abspath(__file__)] + argv + [
        '--onnx', onnx_path, '--child', engine]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
    if proc.returncode or not lines:
        print(f'memory child {engine} failed:\n{proc.stderr[-2000:]}', file=sys.stderr)
        return None
    return json.loads(lines[-1])['peak_mib']


def summarise_profile(path: str, top: int = 12) -> list:
    """Total time per ONNX Runtime operator type in a profile, largest first."""
    with open(path) as f:
        events = json.load(f)
    per_op = collections.Counter()
    for ev in events:
        if ev.get('cat') == 'Node' and ev.get('name', '').endswith('_kernel_time'):
            per_op[ev.get('args', {}).get('op_name', '?')] += ev.get('dur', 0)
    total = sum(per_op.values()) or 1
    return [(op, us / 1000, us / total) for op, us in per_op.most_common(top)]


def versions() -> dict:
    import onnx
    import onnxruntime
    info = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes'),
                python=platform.python_version(), torch=torch.__version__, onnx=onnx.__version__,
                onnxruntime=onnxruntime.__version__, cpu_count=os.cpu_count())
    try:
        import openvino
        info['openvino'] = openvino.__version__.split('-')[0]
    except ImportError:
        pass
    try:
        with open('/proc/cpuinfo') as f:
            info['cpu'] = next(ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name'))
    except (OSError, StopIteration):
        info['cpu'] = platform.processor()
    return info


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from pvt_mm.capabilities import ONNX_EXPORT, exit_unless
    exit_unless(ONNX_EXPORT)  # pvt_mm.deploy needs the exporter's torch
    if args.openvino:
        try:
            import openvino  # noqa: F401
        except ImportError:
            sys.exit(f'error: {OPENVINO_HELP}')
    if args.child:
        print(json.dumps(memory_child(args)))
        return
    if args.onnx and not os.path.isfile(args.onnx):
        sys.exit(f'error: --onnx file {args.onnx!r} does not exist; export it first '
                 '(--save-onnx, or tools/deployment/pytorch2onnx.py)')
    torch.set_num_threads(args.threads)
    from pvt_mm.deploy import build_graph, export_onnx, verify_onnx
    from pvt_mm.deploy.export import model_family
    model, _ = build(args)
    if args.part == 'model' and model_family(model) == 'detector' and not args.checkpoint:
        sys.exit('error: --part model of a detector needs trained weights (--checkpoint, and '
                 '--image with something to detect): random weights detect nothing, so NMS '
                 'would not run and the equality check would compare nothing')
    tmpdir = tempfile.TemporaryDirectory()
    onnx_path = args.onnx
    if onnx_path is None:
        onnx_path = args.save_onnx or os.path.join(tmpdir.name, 'model.onnx')
        start = time.perf_counter()
        export_onnx(model, onnx_path, part=args.part, shape=(256, 320),
                    attention=args.attention)
        print(f'exported in {time.perf_counter() - start:.0f} s')
    check = verify_onnx(build_graph(model, args.part), onnx_path, shapes=[tuple(args.shape)],
                        batch=args.batch, images=input_batch(args, model))
    print('equal:', check[0])
    if args.openvino:
        print('openvino vs onnxruntime (per output):', openvino_vs_ort(args, onnx_path))
    steps = make_steps(args, model, onnx_path)
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for r in range(args.repeat):
        pairs = list(steps.items())
        for name, step in (pairs if r % 2 == 0 else pairs[::-1]):
            start = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - start) * 1000)
    medians = {k: statistics.median(v) for k, v in times.items()}
    memory = {}
    if not args.no_memory:
        memory = {name: measure_memory(argv, name, onnx_path) for name in steps}
    info = versions()
    what = f'{os.path.basename(args.config)}{" arch=" + args.arch if args.arch else ""} ' \
           f'part={args.part} {args.shape[0]}x{args.shape[1]} batch {args.batch}'
    print(f'{what}, {args.threads} threads, median of {args.repeat} (interleaved), '
          f'{info["cpu"]}, torch {info["torch"]}, onnxruntime {info["onnxruntime"]}'
          f'{", openvino " + info["openvino"] if args.openvino else ""}, {info["date"]}')
    print('| engine | median ms | min ms | peak MiB |')
    print('|---|---|---|---|')
    for name in steps:
        mem = memory.get(name)
        print(f'| {name} | {medians[name]:.1f} | {min(times[name]):.1f} | '
              f'{"-" if mem is None else f"{mem:.0f}"} |')
    print(f'time ONNX Runtime / PyTorch: {medians["onnxruntime"] / medians["pytorch"]:.2f}x')
    if args.openvino:
        print(f'time OpenVINO / PyTorch: {medians["openvino"] / medians["pytorch"]:.2f}x')
    profile = None
    if args.profile:
        from pvt_mm.deploy import ORTDetector, ORTRunner
        runner = ORTRunner(onnx_path, num_threads=args.threads, profile=True)
        images = input_batch(args, model)
        extra = ORTDetector.whole_image_inputs(images) if len(runner.input_names) > 1 else ()
        for _ in range(3):
            runner.run(images, *extra)
        path = runner.end_profiling()
        profile = summarise_profile(path)
        print(f'ONNX Runtime profile ({path}), 3 runs, time per operator type:')
        for op, ms, share in profile:
            print(f'  {op:28s} {ms:9.1f} ms  {share:6.1%}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(what=what, threads=args.threads, times_ms=times, medians_ms=medians,
                           peak_mib=memory, profile=profile, **info), f, indent=2)


if __name__ == '__main__':
    main()
