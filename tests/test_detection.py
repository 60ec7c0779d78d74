"""Detection configs and tools: every config builds with the paper's parameter counts, and
each family trains and evaluates on the embedded COCO-format data through tools/."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# Paper Tables 3 and 4 (M parameters of the whole detector).
TABLE_PARAMS_M = {
    'retinanet/pvt_tiny_fpn_1x_coco.py': 23.0,
    'retinanet/pvt_small_fpn_1x_coco.py': 34.2,
    'retinanet/pvt_medium_fpn_1x_coco.py': 53.9,
    'retinanet/pvt_large_fpn_1x_coco.py': 71.1,
    'retinanet/pvt_small_fpn_1x_coco_640.py': 34.2,
    'retinanet/pvt_tiny_fpn_3x_mstrain_coco.py': 23.0,
    'retinanet/pvt_small_fpn_3x_mstrain_coco.py': 34.2,
    'retinanet/pvt_medium_fpn_3x_mstrain_coco.py': 53.9,
    'retinanet/pvt_large_fpn_3x_mstrain_coco.py': 71.1,
    'mask_rcnn/pvt_tiny_fpn_1x_coco.py': 32.9,
    'mask_rcnn/pvt_small_fpn_1x_coco.py': 44.1,
    'mask_rcnn/pvt_medium_fpn_1x_coco.py': 63.9,
    'mask_rcnn/pvt_large_fpn_1x_coco.py': 81.0,
    'mask_rcnn/pvt_small_fpn_3x_mstrain_coco.py': 44.1,
}
DETECTION_CONFIGS = sorted(
    str(p.relative_to(REPO / 'configs')) for family in ('retinanet', 'mask_rcnn', 'detr')
    for p in (REPO / 'configs' / family).glob('*.py'))


def build_detector(config: str):
    import pvt_mm  # noqa: F401  (registers PVT; configs also say so via custom_imports)
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(str(REPO / 'configs' / config))
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return cfg, MODELS.build(cfg.model)


def test_every_table_config_is_listed():
    listed = set(TABLE_PARAMS_M) | {'detr/pvt_small_detr_50e_coco.py'}
    coco = {c for c in DETECTION_CONFIGS if c.endswith(('coco.py', 'coco_640.py'))}
    assert coco == listed


@pytest.mark.parametrize('config', DETECTION_CONFIGS)
def test_config_builds(config):
    cfg, model = build_detector(config)
    assert type(model.backbone).__name__ == 'PVT'
    assert cfg.custom_imports['imports'] == ['pvt_mm']
    if config in TABLE_PARAMS_M:
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert abs(params - TABLE_PARAMS_M[config]) <= 0.1, f'{params:.2f} M vs paper {TABLE_PARAMS_M[config]} M'
    if config.endswith('coco.py') or config.endswith('640.py'):
        assert cfg.model.backbone.init_cfg.checkpoint.startswith('checkpoints/pvt_')
        assert cfg.model.backbone.init_cfg.checkpoint.endswith(f'{cfg.model.backbone.arch}.pth')
        assert cfg.optim_wrapper.optimizer.type == 'AdamW'
        assert cfg.optim_wrapper.optimizer.lr == 1e-4
        assert cfg.model.backbone.drop_path_rate == 0.1


def test_detr_recipe():
    cfg = Config.fromfile(str(REPO / 'configs/detr/pvt_small_detr_50e_coco.py'))
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == 0.1
    assert cfg.optim_wrapper.clip_grad.max_norm == 0.1
    assert cfg.train_cfg.max_epochs == 50
    assert cfg.param_scheduler[-1].milestones == [33]
    assert cfg.model.backbone.out_indices == (3, )


def test_missing_pretrained_weights_say_where_to_get_them(tmp_path):
    cfg, model = build_detector('retinanet/pvt_small_fpn_1x_coco.py')
    model.backbone.init_cfg['checkpoint'] = str(tmp_path / 'pvt_small.pth')
    with pytest.raises(FileNotFoundError, match=r'(?s)pvt_small\.pth.*does not exist.*github\.com/whai362/PVT.*from scratch'):
        model.init_weights()


# ------------------------------------------------------------------ end to end on CPU
@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('data') / 'shapes_coco'
    subprocess.run([PYTHON, 'tools/misc/make_shapes_coco.py', '--out', str(root),
                    '--train', '4', '--val', '2'], cwd=REPO, check=True)
    return root


def _data_options(root: Path) -> list:
    return [f'train_dataloader.dataset.data_root={root}/', f'val_dataloader.dataset.data_root={root}/',
            f'test_dataloader.dataset.data_root={root}/',
            f'val_evaluator.ann_file={root}/annotations/instances_val2017.json',
            f'test_evaluator.ann_file={root}/annotations/instances_val2017.json']


def _run(args, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, **kwargs)
    assert result.returncode == 0, (result.stdout[-4000:] + result.stderr[-4000:])
    return result.stdout + result.stderr


# An untrained detector scores below the default thresholds; keep every box so the
# smoke runs still exercise the COCO evaluation.
KEEP_ALL_BOXES = {
    'retinanet': ['model.test_cfg.score_thr=0.0'],
    'mask_rcnn': ['model.test_cfg.rcnn.score_thr=0.0'],
    'detr': [],
}
FAMILY_CONFIGS = {
    'retinanet': 'configs/retinanet/pvt_tiny_fpn_shapes.py',
    'mask_rcnn': 'configs/mask_rcnn/pvt_tiny_fpn_shapes.py',
    'detr': 'configs/detr/pvt_small_detr_shapes.py',
}


@pytest.mark.parametrize('family', sorted(FAMILY_CONFIGS))
def test_family_trains_and_evaluates(family, shapes_root, tmp_path):
    config = FAMILY_CONFIGS[family]
    work = tmp_path / family
    options = _data_options(shapes_root) + [
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'train_dataloader.batch_size=2',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
        'default_hooks.logger.interval=1', *KEEP_ALL_BOXES[family]]
    scale_lr = ['--auto-scale-lr'] if family == 'retinanet' else []
    log = _run([PYTHON, 'tools/train.py', config, '--work-dir', str(work), *scale_lr,
                '--cfg-options', *options], timeout=900)
    if scale_lr:  # batch 2 against the config's base batch 4
        assert 'Scaling the original LR by 0.5' in log, log[-3000:]
    ckpt = work / 'epoch_1.pth'
    assert ckpt.is_file()
    out = _run([PYTHON, 'tools/test.py', config, str(ckpt), '--work-dir', str(work / 'test'),
                '--out', str(work / 'preds.pkl'), '--cfg-options', *options], timeout=600)
    assert re.search(r'coco/bbox_mAP: -?[\d.]+', out), out[-2000:]
    if family == 'mask_rcnn':
        assert re.search(r'coco/segm_mAP: -?[\d.]+', out)
    assert (work / 'preds.pkl').is_file()


def test_tool_errors_are_clear(tmp_path):
    result = subprocess.run([PYTHON, 'tools/train.py', 'configs/retinanet/nope.py'], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "config file 'configs/retinanet/nope.py' does not exist" in result.stderr
    result = subprocess.run([PYTHON, 'tools/test.py', FAMILY_CONFIGS['retinanet'], str(tmp_path / 'x.pth')],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and 'checkpoint file' in result.stderr and 'does not exist' in result.stderr
    if not torch.cuda.is_available():
        result = subprocess.run([PYTHON, 'tools/train.py', FAMILY_CONFIGS['retinanet'], '--amp',
                                 '--work-dir', str(tmp_path)], cwd=REPO, capture_output=True, text=True)
        assert result.returncode != 0 and '--amp needs a CUDA GPU' in result.stderr


def test_resume_continues_from_the_saved_iteration(shapes_root, tmp_path):
    config = FAMILY_CONFIGS['retinanet']
    work = tmp_path / 'resume'
    base = _data_options(shapes_root) + [
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False', 'train_cfg.val_interval=100',
        'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1']
    # The first run stops after epoch 1 (as if interrupted before epoch 2).
    _run([PYTHON, 'tools/train.py', config, '--work-dir', str(work), '--cfg-options',
          *base, 'train_cfg.max_epochs=1'], timeout=600)
    first = torch.load(work / 'epoch_1.pth', weights_only=False, map_location='cpu')
    out = _run([PYTHON, 'tools/train.py', config, '--work-dir', str(work), '--resume',
                '--cfg-options', *base, 'train_cfg.max_epochs=2'], timeout=600)
    assert f"resumed epoch: 1, iter: {first['meta']['iter']}" in out
    second = torch.load(work / 'epoch_2.pth', weights_only=False, map_location='cpu')
    assert second['meta']['iter'] == 2 * first['meta']['iter']
    assert 'Weights only load failed' not in out


def test_dist_train_two_cpu_processes(shapes_root, tmp_path):
    work = tmp_path / 'ddp'
    options = _data_options(shapes_root) + [
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'train_dataloader.batch_size=1',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
        'default_hooks.logger.interval=1', *KEEP_ALL_BOXES['retinanet']]
    env_port = str(29500 + os.getpid() % 1000)
    env = dict(os.environ, PORT=env_port, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    result = subprocess.run(['bash', 'tools/dist_train.sh', FAMILY_CONFIGS['retinanet'], '2',
                             '--work-dir', str(work), '--cfg-options', *options], cwd=REPO,
                            capture_output=True, text=True, env=env, timeout=900)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    assert 'Distributed launcher: pytorch' in out and 'Distributed training: True' in out
    assert 'GPU number: 2' in out  # mmengine's name for the world size
    # 4 images / (2 processes x batch 1) = 2 iterations per process and epoch.
    assert re.search(r'Epoch\(train\) +\[1\]\[2/2\]', out), out[-3000:]
    assert (work / 'epoch_1.pth').is_file()
    assert re.search(r'coco/bbox_mAP: -?[\d.]+', out)
