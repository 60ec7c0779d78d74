"""The whole-model benchmark on CPU, and the benchmark tools and mixed-precision training on
a GPU (tests marked ``cuda``: skipped, with the reason, where there is none). Speed itself
is reported by the tools, never asserted here."""
import json
import math

import pytest
import torch

from .conftest import load_tool, run_tool, shapes_options

R50_TWIN = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
MAIN_JOB = 'configs/retinanet/pvtv2_b0_fpn_shapes.py'  # tools/quickstart.sh's config


def _run(args):
    return run_tool(args).stdout


def _table(out):
    """Rows of the tool's markdown table, as lists of cells (header and rule dropped)."""
    rows = [ln.strip('| ').split(' | ') for ln in out.splitlines() if ln.startswith('| ')]
    return [r for r in rows if r[0] != 'model']


def test_benchmark_compares_a_detector_with_its_resnet50_twin():
    out = _run(['tools/analysis/benchmark.py', 'configs/retinanet/pvt_tiny_fpn_1x_coco.py',
                '--compare', R50_TWIN, '--shape', '96', '128', '--repeat', '2', '--warmup', '1'])
    rows = _table(out)
    assert [r[0] for r in rows] == ['pvt_tiny_fpn_1x_coco', 'retinanet_r50_fpn_1x_coco'], out
    median, low, high, fps, ratio = ([float(r[i]) for r in rows] for i in (2, 3, 4, 5, 6))
    for i in range(2):
        assert 0 < low[i] <= median[i] <= high[i], rows[i]
        assert fps[i] == pytest.approx(1e3 / median[i], rel=0.02, abs=0.01)  # batch 1
    # Time relative to the first model: the ratio of the printed medians (0.1 ms, 2 decimals).
    assert ratio[0] == 1.0
    assert ratio[1] == pytest.approx(median[1] / median[0], rel=0.02, abs=0.006)


def test_benchmark_names_a_missing_twin_config():
    proc = run_tool(['tools/analysis/benchmark.py', 'configs/retinanet/pvt_tiny_fpn_1x_coco.py',
                     '--compare', 'mmdet::retinanet/no_such_config.py'], check=False)
    assert proc.returncode != 0 and 'no_such_config.py' in proc.stderr
    assert 'not among the installed mmdet configs' in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal on a host without CUDA')
def test_benchmark_takes_cuda_n_for_cuda():
    """'cuda:0' is CUDA too (CUDA-event timing, peak memory): without a GPU it is refused
    up front like 'cuda', not run down the CPU branch until something fails."""
    benchmark = load_tool('tools/analysis/benchmark.py')
    with pytest.raises(SystemExit) as exit_:
        benchmark.main(['configs/retinanet/pvt_tiny_fpn_1x_coco.py', '--device', 'cuda:0'])
    assert str(exit_.value) == ('error: --device cuda:0 but no CUDA GPU is visible; '
                                'use --device cpu')


def test_benchmark_takes_the_amp_dtype_names_of_train():
    """One table of autocast dtypes (pvt_mm.runner_options.AMP_DTYPES) serves both tools."""
    from pvt_mm.runner_options import AMP_DTYPES
    benchmark = load_tool('tools/analysis/benchmark.py')
    for name in ('float16', 'bfloat16', 'fp16', 'bf16'):
        args = benchmark.parse_args(['configs/retinanet/pvt_tiny_fpn_1x_coco.py',
                                     '--amp-dtype', name])
        assert getattr(torch, AMP_DTYPES[args.amp_dtype]) in (torch.float16, torch.bfloat16)


cuda = pytest.mark.cuda


@cuda
def test_cuda_benchmark_on_cuda_0_times_with_events_and_reports_peak_memory():
    out = _run(['tools/analysis/benchmark.py', 'configs/retinanet/pvt_tiny_fpn_1x_coco.py',
                '--device', 'cuda:0', '--shape', '256', '320', '--repeat', '2', '--warmup', '1'])
    rows = _table(out)
    assert len(rows) == 1 and float(rows[0][7]) > 0, out  # peak extra memory, not '-'
    assert 'device cuda:0 ' in out


@cuda
def test_cuda_benchmark_backbone_runs_with_tf32_on(tmp_path):
    """The equivalence check runs in exact fp32 even though TF32 is torch's default for
    cuDNN convolutions; then fp32 and bf16 cases are timed with CUDA events."""
    out_json = tmp_path / 'bench.json'
    out = _run(['tools/analysis/benchmark_backbone.py', '--device', 'cuda', '--arch', 'tiny',
                '--shape', '224', '288', '--batch-sizes', '2', '--modes', 'infer', 'train',
                '--dtypes', 'fp32', 'bf16', '--repeat', '3', '--json', str(out_json)])
    assert ': OK' in out
    data = json.loads(out_json.read_text())
    assert len(data['results']) == 4 and 'gpu' in data['machine']
    for row in data['results']:
        assert set(row['peak_mib']) == {'pvt_mm', 'mmdet_pvt', 'resnet50'}
        assert row['memory_method'] == 'torch.cuda.max_memory_allocated'


@cuda
def test_cuda_benchmark_detector_vs_r50_in_bf16():
    out = _run(['tools/analysis/benchmark.py', 'configs/retinanet/pvt_small_fpn_1x_coco.py',
                '--compare', R50_TWIN, '--shape', '800', '1344', '--batch', '2',
                '--amp-dtype', 'bf16', '--repeat', '3'])
    rows = _table(out)
    # Peak extra memory is measured on CUDA ('-' where it is not): at 800x1344, batch 2, the
    # stride-4 features alone (ResNet-50's 256 channels, PVT-Small's 512-wide FFN hidden
    # layer) hold 2 x 200 x 336 x 256 bf16 values (66 MiB) or more.
    assert len(rows) == 2 and all(float(r[7]) > 50 for r in rows), out


@cuda
@pytest.mark.parametrize('flags', [['--amp'], ['--amp-dtype', 'bfloat16']])
def test_cuda_mixed_precision_trains_the_main_job_config(tmp_path, flags):
    """fp16 (dynamic loss scale) and bf16 train the main job's RetinaNet + PVT v2-b0 (its
    depth-wise conv FFN included) from scratch on the shapes set with a finite loss
    throughout and no skipped steps after the first few iterations."""
    data = tmp_path / 'shapes_coco'
    _run(['tools/misc/make_shapes_coco.py', '--out', str(data), '--train', '32', '--val', '8'])
    work = tmp_path / 'work'
    _run(['tools/train.py', MAIN_JOB, '--work-dir', str(work),
          *flags, '--cfg-options', *shapes_options(data), 'train_cfg.max_epochs=3',
          'train_cfg.val_interval=3', 'default_hooks.logger.interval=1'])
    logs = sorted(work.glob('*/vis_data/scalars.json'))
    records = [json.loads(ln) for ln in logs[-1].read_text().splitlines()]
    steps = [r for r in records if 'loss' in r]
    assert len(steps) >= 20
    assert all(math.isfinite(r['loss']) for r in steps)
    # The dynamic loss scale may overshoot in the first iterations; after that a
    # non-finite gradient norm means a skipped step.
    skipped = [r['iter'] for r in steps[5:] if not math.isfinite(r.get('grad_norm', 0.0))]
    assert not skipped, f'non-finite grad_norm (skipped steps) at iterations {skipped}'
    assert any('coco/bbox_mAP' in r for r in records)


def test_batch_invariance_cost_tool_times_each_pair():
    """benchmark_batch_invariance.py: a row per case, the ratio of the printed medians."""
    out = _run(['tools/analysis/benchmark_batch_invariance.py', '--archs', 'b0',
                '--shape', '64x64', '--mixed', '64x64', '32x64', '--det-shape', '64x96',
                '--det-mixed', '64x96', '32x64', '--repeat', '2', '--warmup', '1', '--train'])
    rows = [r for r in _table(out) if r[0] != 'case']
    cases = [f'{model}, batch {n}' for model in ('b0 backbone', 'pvtv2_b0_fpn_shapes')
             for n in ('1', '2 mixed')]
    assert [r[0] for r in rows] == [c + step for c in cases for step in ('', ', training step')], out
    assert rows[2][1] == rows[3][1] == '64x64, 32x64 in 64x64', rows[2:4]
    for row in rows:
        invariant, plain, ratio = (float(v) for v in row[2:5])
        assert invariant > 0 and plain > 0
        assert ratio == pytest.approx(invariant / plain, rel=0.02, abs=0.002), row


def test_batch_invariance_cost_refuses_a_pair_that_differs_unpadded(monkeypatch):
    """The timed pair is checked first: unpadded, the invariant backbone must give exactly
    the plain one's maps (here the invariant one gets other weights, so it does not)."""
    from pvt_mm import batch_invariance_cost as cost
    real = cost.build_backbone
    monkeypatch.setattr(cost, 'build_backbone', lambda arch, seed, batch_invariant: real(
        arch, seed + int(batch_invariant), batch_invariant=batch_invariant))
    with pytest.raises(AssertionError, match='differs from the plain one'):
        cost.backbone_cost('b0', (64, 64), [(64, 64), (32, 64)], warmup=0, repeat=1)
