"""Reliability: nothing lost on interruption, hostile or damaged checkpoints refused,
bad inputs answered clearly. `pytest -k "resume or pickle or bad_input"` lists them."""
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from .conftest import (PYTHON, REPO, build_from_config, cpu_only, no_worker_options, run_tool,
                       shapes_options)

CONFIG = 'configs/retinanet/pvt_tiny_fpn_shapes.py'


def _options(root: Path, epochs: int) -> list:
    return shapes_options(root) + no_worker_options('train_dataloader', 'val_dataloader') + [
        'train_dataloader.batch_size=2', f'train_cfg.max_epochs={epochs}',
        'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=-1', 'default_hooks.logger.interval=1',
        'randomness.seed=0', 'randomness.deterministic=True']


# The device is explicit, so each test means the same on every host: mmengine trains on
# CUDA whenever a GPU is visible.
DEVICE_ENV = {'cpu': cpu_only(),
              # cuBLAS needs a fixed workspace to be deterministic.
              'cuda': {'CUBLAS_WORKSPACE_CONFIG': ':4096:8'}}


def _env(device: str = 'cpu') -> dict:
    return dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1', **DEVICE_ENV[device])


def _train(work: Path, options: list, *extra: str, check: bool = True, device: str = 'cpu'):
    return run_tool(['tools/train.py', CONFIG, '--work-dir', work, *extra, '--cfg-options',
                     *options], check=check, env=DEVICE_ENV[device])


def _weights(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


@pytest.fixture(scope='module')
def uninterrupted(shapes_root, tmp_path_factory):
    work = tmp_path_factory.mktemp('uninterrupted')
    _train(work, _options(shapes_root, 3))
    return work


def _kill_resume_and_compare(shapes_root, reference: Path, work: Path, device: str) -> None:
    """Kill a run in the middle of epoch 3, ``--resume`` it, and require epoch 3's weights to
    equal the uninterrupted run's in ``reference`` exactly."""
    cmd = [PYTHON, 'tools/train.py', CONFIG, '--work-dir', str(work), '--cfg-options',
           *_options(shapes_root, 3)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env(device), start_new_session=True)
    seen = []
    deadline = time.time() + 600
    for line in proc.stdout:  # kill in the middle of epoch 3 (after its first iteration)
        seen.append(line)
        if 'Epoch(train) [3][1/2]' in line or time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, ''.join(seen[-30:])
    assert (work / 'epoch_2.pth').is_file() and not (work / 'epoch_3.pth').exists()
    resumed = _train(work, _options(shapes_root, 3), '--resume', device=device)
    assert 'resumed epoch: 2, iter: 4' in resumed.output
    assert 'Restored the RNG states' in resumed.output
    expected, got = _weights(reference / 'epoch_3.pth'), _weights(work / 'epoch_3.pth')
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)


@pytest.mark.compat
def test_resume_after_sigkill_matches_uninterrupted_run(shapes_root, uninterrupted, tmp_path):
    _kill_resume_and_compare(shapes_root, uninterrupted, tmp_path / 'killed', 'cpu')


@pytest.mark.cuda
def test_resume_on_the_gpu_matches_uninterrupted_run(shapes_root, tmp_path):
    """mmengine resumes with map_location='cuda' here: the RNG states arrive as CUDA tensors,
    and the CUDA generator (drop-path draws) must be restored too."""
    reference = tmp_path / 'uninterrupted'
    _train(reference, _options(shapes_root, 3), device='cuda')
    _kill_resume_and_compare(shapes_root, reference, tmp_path / 'killed', 'cuda')
    state = torch.load(reference / 'epoch_3.pth', map_location='cpu', weights_only=False)['rng_state']
    assert 'cuda' in state['ranks'][0]  # the CUDA generator travels with the checkpoint


def test_resume_skips_a_checkpoint_truncated_while_writing(shapes_root, uninterrupted, tmp_path):
    work = tmp_path / 'truncated'
    work.mkdir()
    for name in ('epoch_1.pth', 'epoch_2.pth'):
        (work / name).write_bytes((uninterrupted / name).read_bytes())
    data = (uninterrupted / 'epoch_3.pth').read_bytes()
    (work / 'epoch_3.pth').write_bytes(data[:len(data) // 3])  # a write cut short by a kill
    (work / 'last_checkpoint').write_text(str(work / 'epoch_3.pth'))
    result = _train(work, _options(shapes_root, 3), '--resume')
    out = result.stdout + result.stderr
    assert 'Skipping checkpoint' in out and 'truncated' in out
    assert 'resumed epoch: 2, iter: 4' in out
    torch.testing.assert_close(_weights(work / 'epoch_3.pth'), _weights(uninterrupted / 'epoch_3.pth'),
                               rtol=0, atol=0)


def _injecting_config(tmp_path: Path, *hooks: str) -> Path:
    """CONFIG plus test-only hooks from tests/fault_injection.py (run with :func:`_injected_env`)."""
    config = tmp_path / 'injected.py'
    config.write_text(
        f"_base_ = '{REPO / CONFIG}'\n"
        "custom_imports = dict(imports=['pvt_mm', 'fault_injection'], allow_failed_imports=False)\n"
        f"custom_hooks = [{', '.join(hooks)}]\n")
    return config


def _injected_env(**extra: str) -> dict:
    return dict(PYTHONPATH=f"{REPO / 'tests'}:{os.environ.get('PYTHONPATH', '')}", **extra)


def test_checkpoint_hook_writes_checkpoint_and_pointer_atomically(shapes_root, tmp_path):
    """A real training run, killed after epoch 2's checkpoint data is written but before its
    rename: epoch 1's checkpoint and ``last_checkpoint`` (both renamed into place) are intact,
    no ``epoch_2.pth`` exists, and the checkpoints have the mode a plain write gives."""
    log = tmp_path / 'renames.log'
    config = _injecting_config(
        tmp_path, f"dict(type='KillAtRenameHook', log='{log}', target='epoch_2.pth')")
    work = tmp_path / 'work'
    # umask 027 gives 0640 files; mkstemp alone would leave 0600.
    result = run_tool(['bash', '-c', 'umask 027 && exec "$0" "$@"', PYTHON, 'tools/train.py',
                       config, '--work-dir', work, '--cfg-options', *_options(shapes_root, 2)],
                      check=False, env=_injected_env())
    assert result.returncode == -signal.SIGKILL, result.output[-3000:]
    renames = log.read_text().splitlines()
    ckpt1, pointer = str(work / 'epoch_1.pth'), str(work / 'last_checkpoint')
    assert any(line.endswith(f' -> {ckpt1}') and '/.epoch_1.pth.' in line for line in renames), renames
    assert any(line.endswith(f' -> {pointer}') and '/.last_checkpoint.' in line for line in renames), renames
    assert not (work / 'epoch_2.pth').exists()
    assert [p.name for p in work.glob('.epoch_2.pth.*.tmp')]  # the written, never renamed data
    assert (work / 'last_checkpoint').read_text() == ckpt1
    assert _weights(work / 'epoch_1.pth')  # complete and loadable
    assert (work / 'epoch_1.pth').stat().st_mode & 0o777 == 0o640
    assert (work / 'last_checkpoint').stat().st_mode & 0o777 == 0o640


def _crafted_checkpoint(path: Path, marker: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))

    torch.save({'meta': {'epoch': 1, 'iter': 2}, 'state_dict': {}, 'x': Payload()}, path)


def test_atomic_writes_never_touch_the_process_umask(tmp_path):
    """Reading the umask takes setting it (``os.umask``), and while it is 0 another thread's new
    file is world-writable: the atomic write gets a plain write's mode (0666 less the umask,
    0640 under 027) from the kernel instead, and never calls ``os.umask``."""
    from pvt_mm.fileio import replaced_atomically
    previous = os.umask(0o027)
    try:
        with pytest.MonkeyPatch.context() as patch:
            def umask(mask):
                raise AssertionError(f'os.umask({mask:#o}) called: the process umask changed')
            patch.setattr(os, 'umask', umask)
            with replaced_atomically(tmp_path / 'out.json') as tmp, open(tmp, 'w') as f:
                f.write('{}')
    finally:
        os.umask(previous)
    assert (tmp_path / 'out.json').stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ['out.json']


@pytest.mark.compat
def test_crafted_pickle_refused_by_resume_load_from_and_test(shapes_root, tmp_path):
    marker = tmp_path / 'payload_ran'
    evil = tmp_path / 'epoch_1.pth'
    _crafted_checkpoint(evil, marker)
    opts = _options(shapes_root, 1)
    for extra, options in ((['--resume', str(evil)], opts), ([], opts + [f'load_from={evil}'])):
        result = _train(tmp_path / 'work', options, *extra, check=False)
        assert result.returncode != 0
        assert 'Refused to load' in result.stderr and 'Traceback' not in result.stderr
    result = run_tool(['tools/test.py', CONFIG, evil, '--cfg-options', *opts], check=False)
    assert result.returncode != 0 and 'Refused to load' in result.stderr
    assert not marker.exists()


def test_nan_loss_stops_training_naming_the_iteration(shapes_root, tmp_path):
    work = tmp_path / 'nan'
    result = _train(work, _options(shapes_root, 1) + ['model.bbox_head.loss_cls.loss_weight=nan'],
                    check=False)
    assert result.returncode != 0
    assert 'Loss is nan at iteration 1 (epoch 1)' in result.stderr
    assert not list(work.glob('epoch_*.pth'))


@pytest.mark.parametrize('override,message', [
    (['train_dataloader.dataset.data_root=/nonexistent/coco/'], "data_root '/nonexistent/coco/' does not exist"),
    (['train_dataloader.dataset.ann_file=annotations/missing.json'], 'annotation file'),
    (['model.backbone.arch=huge'], "Unknown PVT arch 'huge'"),
    (['model.backbone.out_indices=(0,5)'], 'out_indices (0, 5)'),
    (['model.backbone.frozen_stages=7'], 'frozen_stages=7 is out of range'),
])
def test_bad_input_configs_fail_early_and_clearly(shapes_root, tmp_path, override, message):
    result = _train(tmp_path / 'bad', _options(shapes_root, 1) + override, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-3000:]


def test_bad_input_coco_annotations_are_skipped_with_a_warning(shapes_root, tmp_path):
    """The counts are exactly what mmdet's own CocoDataset drops from the same file."""
    from mmdet.datasets import CocoDataset

    from pvt_mm.data_checks import check_coco_annotations
    coco = json.loads((shapes_root / 'annotations' / 'instances_train2017.json').read_text())
    first = dict(coco['annotations'][0])
    coco['annotations'] += [
        dict(first, id=9001, bbox=[1000, 1000, 20, 20]),            # outside the image
        dict(first, id=9002, bbox=[10, 10, 0, 0], area=0),          # zero size: no area inside
        dict(first, id=9003, bbox=[10, 10, 0.5, 20], area=10),      # under 1 pixel wide
        dict(first, id=9004, bbox=[10, 10, 20, 0.9], area=18),      # under 1 pixel high
        dict(first, id=9005, bbox=[10, 10, 20, 20], area=0),        # area 0, box fine
        dict(first, id=9006, bbox=[-10, -10, 20, 20], area=400),    # partly outside: kept
        dict(first, id=9007, category_id=12345),                    # missing category
        dict(first, id=9008, image_id=54321),                       # missing image
    ]
    broken = tmp_path / 'broken.json'
    broken.write_text(json.dumps(coco))
    counts = check_coco_annotations(str(broken))
    assert counts == {'box with no area inside its image': 2,
                      'box under 1 pixel wide or high, or of zero area': 3,
                      'unknown category': 1, 'unknown image': 1}
    dataset = CocoDataset(ann_file=str(broken), data_prefix=dict(img=''), pipeline=[],
                          metainfo=dict(classes=[c['name'] for c in coco['categories']]))
    kept = sum(len(info['instances']) for info in dataset.load_data_list())
    assert len(coco['annotations']) - kept == sum(counts.values())


def _rng_digests(out: str, when: str) -> dict:
    return {int(rank): digest for rank, digest in re.findall(rf'rng rank (\d) {when}: (\w+)', out)}


def test_resume_after_a_ddp_worker_dies(shapes_root, tmp_path):
    """Rank 1 dies; the job resumes from epoch 1 with each rank's own RNG states (they differ
    under diff_rank_seed) restored, on CPU processes even where a GPU is visible."""
    faulty = _injecting_config(tmp_path, "dict(type='DieOnRankHook', rank=1, at_iter=4)",
                               "dict(type='PrintRNGHook')")
    # Iteration 4 is the second of epoch 2: its peer finished iteration 3's all-reduce,
    # so epoch 1's checkpoint is complete on disk when the worker dies.
    work = tmp_path / 'ddp'
    options = _options(shapes_root, 2) + ['train_dataloader.batch_size=1',
                                          'randomness.deterministic=False',
                                          'randomness.diff_rank_seed=True']
    env = cpu_only(_injected_env(PORT=str(29600 + os.getpid() % 300)))
    start = time.time()
    result = run_tool(['tools/dist_train.sh', faulty, '2', '--work-dir', work, '--cfg-options',
                       *options], check=False, env=env, timeout=600)
    elapsed = time.time() - start
    out = result.output
    assert result.returncode != 0, out[-3000:]
    assert 'rank 1 dies at iteration 4' in out
    assert 'exitcode' in out and '3' in out  # torchrun names the failed worker and its code
    assert elapsed < 300, f'the job took {elapsed:.0f} s to notice the dead worker'
    assert (work / 'epoch_1.pth').is_file() and not (work / 'epoch_2.pth').exists(), out[-4000:]
    saved = _rng_digests(out, 'after epoch 1')
    assert sorted(saved) == [0, 1] and saved[0] != saved[1], out[-3000:]
    # Resume the same job without the fault: it continues from epoch 1 and completes.
    probe = tmp_path / 'probe'
    probe.mkdir()
    env['PORT'] = str(int(env['PORT']) + 1)
    result = run_tool(['tools/dist_train.sh', _injecting_config(probe, "dict(type='PrintRNGHook')"),
                       '2', '--work-dir', work, '--resume', '--cfg-options', *options],
                      check=False, env=env, timeout=600)
    out = result.output
    assert result.returncode == 0, out[-3000:]
    assert 'resumed epoch: 1, iter: 2' in out
    assert _rng_digests(out, 'before_train') == saved
    assert (work / 'epoch_2.pth').is_file()


def test_load_from_keeps_the_configured_seed(shapes_root, uninterrupted, tmp_path):
    """Fine-tuning from a checkpoint (load_from, not --resume) must not replace the configured
    seed's random streams with the ones saved in the checkpoint: the generators when training
    starts are those of the same run without load_from, not the checkpoint's."""
    from .fault_injection import state_digest
    # Each run stops before its first iteration, after PrintRNGHook's before_train.
    config = _injecting_config(tmp_path, "dict(type='PrintRNGHook')",
                               "dict(type='DieOnRankHook', rank=0, at_iter=1)")
    checkpoint = uninterrupted / 'epoch_1.pth'
    started = {}
    for run, extra in (('finetune', [f'load_from={checkpoint}']), ('fresh', [])):
        result = run_tool(['tools/train.py', config, '--work-dir', tmp_path / run, '--cfg-options',
                           *_options(shapes_root, 1), *extra], check=False, env=_injected_env())
        assert 'rank 0 dies at iteration 1' in result.output, result.output[-3000:]
        started[run] = _rng_digests(result.output, 'before_train')[0]
    saved = torch.load(checkpoint, map_location='cpu', weights_only=False)['rng_state']
    assert started['finetune'] == started['fresh'] != state_digest(saved['ranks'][0])


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_training_step_on_embedded_data_stays_finite(shapes_root, dtype):
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate
    torch.manual_seed(0)
    cfg, model = build_from_config(CONFIG)
    model.init_weights()
    model.train()
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.data_root = f'{shapes_root}/'
    dataset = DATASETS.build(dataset_cfg)
    batch = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), training=True)
    with torch.autocast('cpu', dtype=dtype):
        losses = model.loss(batch['inputs'], batch['data_samples'])
    loss, _ = model.parse_losses(losses)  # mmengine's reduction of the per-level losses
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_bad_input_backbone_checkpoint_given_as_a_whole_model(shapes_root, tmp_path):
    """The reverse of loading a detector checkpoint as a backbone: mmengine would load a
    backbone-only file into nothing (non-strict) and carry on; the tools refuse it."""
    import pvt_mm
    backbone = tmp_path / 'pvt_tiny_backbone.pth'
    torch.save({'state_dict': pvt_mm.PVT(arch='tiny').state_dict()}, backbone)
    opts = _options(shapes_root, 1)
    for extra, options in ((['--resume', str(backbone)], opts), ([], opts + [f'load_from={backbone}'])):
        result = _train(tmp_path / 'work', options, *extra, check=False)
        assert result.returncode != 0
        assert 'backbone-only weights' in result.stderr and 'init_cfg' in result.stderr
    result = run_tool(['tools/test.py', CONFIG, backbone, '--cfg-options', *opts], check=False)
    assert result.returncode != 0 and 'backbone-only weights' in result.stderr
