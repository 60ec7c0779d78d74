"""Detection configs and tools: every config builds with the paper's parameter counts (v1)
or exactly mmdet's own RetinaNet-PVTv2's (v2), the smallest v2 ones predict on a random
image, and each family trains and evaluates on the embedded COCO-format data through tools/."""
import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from pvt_mm.models.backbones import archs

from .conftest import (REPO, assert_same_detections, build_from_config, cpu_only,
                       evaluate_on_both_stacks, no_worker_options, predict_random_image,
                       run_tool, shapes_options)

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
# PVT v2, 1x: every arch for both detectors (the official release's set), from the arch table.
V2_CONFIGS = [row.config_file(family) for row in archs.rows('v2')
              for family in ('retinanet', 'mask_rcnn') if family in row.families]
DETECTION_CONFIGS = sorted(
    str(p.relative_to(REPO / 'configs')) for family in ('retinanet', 'mask_rcnn', 'detr')
    for p in (REPO / 'configs' / family).glob('*.py'))


def test_every_table_config_is_listed():
    listed = set(TABLE_PARAMS_M) | set(V2_CONFIGS) | {'detr/pvt_small_detr_50e_coco.py'}
    coco = {c for c in DETECTION_CONFIGS if c.endswith(('coco.py', 'coco_640.py'))}
    assert coco == listed


@pytest.mark.parametrize('config', DETECTION_CONFIGS)
def test_config_builds(config):
    cfg, model = build_from_config(config)
    v2 = '/pvtv2_' in config  # the file name says the version (main job included)
    assert type(model.backbone).__name__ == ('PVTv2' if v2 else 'PVT')
    assert cfg.custom_imports['imports'] == ['pvt_mm']
    assert model.backbone.out_channels == tuple(cfg.model.neck.in_channels)
    if config in TABLE_PARAMS_M:
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert abs(params - TABLE_PARAMS_M[config]) <= 0.1, f'{params:.2f} M vs paper {TABLE_PARAMS_M[config]} M'
    if config.endswith('coco.py') or config.endswith('640.py'):
        row = archs.arch_row(cfg.model.backbone.arch)
        assert row.backbone_type == cfg.model.backbone.type
        assert cfg.model.backbone.init_cfg.checkpoint == row.checkpoint_path
        # The recipe (optimizer, schedule, batch, drop-path, scales): test_recipes.py.


# mmdet 3.3 has no linear SRA: those rows have no mmdet twin.
@pytest.mark.parametrize('arch', [row.name for row in archs.rows('v2')
                                  if not row.fields['linear_sra']])
def test_retinanet_v2_has_the_parameter_count_of_mmdets(arch):
    """Our RetinaNet-PVTv2 and mmdet 3.3's own retinanet_pvtv2-bX_fpn_1x_coco.py, both built
    through mmdet's registry without weights: exactly the same parameter count (and the same
    backbone count; b2_li has no mmdet twin, mmdet lacks linear SRA)."""
    from mmengine.hub import get_config
    from mmdet.registry import MODELS
    _, ours = build_from_config(f'retinanet/pvtv2_{arch}_fpn_1x_coco.py', with_weights=False)
    theirs_cfg = get_config(f'mmdet::pvt/retinanet_pvtv2-{arch}_fpn_1x_coco.py')
    theirs_cfg.model.backbone.init_cfg = None
    theirs = MODELS.build(theirs_cfg.model)
    assert type(theirs.backbone).__name__ == 'PyramidVisionTransformerV2'

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(ours.backbone) == count(theirs.backbone)
    assert count(ours) == count(theirs)


@pytest.mark.parametrize('config', ['retinanet/pvtv2_b0_fpn_1x_coco.py',
                                    'mask_rcnn/pvtv2_b0_fpn_1x_coco.py'])
def test_v2_detector_predicts_on_a_small_image(config):
    """A whole test step (preprocessing, backbone, FPN, heads, NMS; masks for Mask R-CNN)
    of the smallest v2 configs on a random 64x80 image, untrained (every box kept)."""
    _, model = build_from_config(config, with_weights=False)
    model.init_weights()
    if config.startswith('mask_rcnn'):
        model.roi_head.test_cfg.score_thr = 0.0
    else:
        model.bbox_head.test_cfg.score_thr = 0.0
    (pred, ) = predict_random_image(model, 'mmdet', (64, 80))
    boxes = pred.pred_instances.bboxes
    assert len(boxes) > 0 and torch.isfinite(boxes).all()
    if config.startswith('mask_rcnn'):
        assert tuple(pred.pred_instances.masks.shape[1:]) == (64, 80)


def test_detr_recipe():
    cfg = Config.fromfile(str(REPO / 'configs/detr/pvt_small_detr_50e_coco.py'))
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == 0.1
    assert cfg.optim_wrapper.clip_grad.max_norm == 0.1
    assert cfg.train_cfg.max_epochs == 50
    assert cfg.param_scheduler[-1].milestones == [33]
    assert cfg.model.backbone.out_indices == (3, )


@pytest.mark.parametrize('config, name', [('retinanet/pvt_small_fpn_1x_coco.py', 'pvt_small.pth'),
                                          ('retinanet/pvtv2_b2_fpn_1x_coco.py', 'pvt_v2_b2.pth')])
def test_missing_pretrained_weights_say_where_to_get_them(tmp_path, config, name):
    cfg, model = build_from_config(config)
    model.backbone.init_cfg['checkpoint'] = str(tmp_path / name)
    url = re.escape(f'github.com/whai362/PVT/releases/download/v2/{name}')
    expected = rf'(?s){re.escape(name)}.*does not exist.*from scratch.*{url}'
    with pytest.raises(FileNotFoundError, match=expected):
        model.init_weights()


# ------------------------------------------------------------------ end to end on CPU
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


def _coco_bbox_ap(dump: Path, ann_file: Path) -> float:
    """AP@[.5:.95] of a ``tools/test.py --out`` dump, computed directly with pycocotools as
    mmdet's CocoMetric sets it up (the set's classes, the dumped images, 100/300/1000 boxes)."""
    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gt = COCO(str(ann_file))
    cat_ids = gt.getCatIds(catNms=['sports ball', 'kite', 'tv'])  # labels 0, 1, 2
    dets = []
    with open(dump, 'rb') as f:
        samples = pickle.load(f)
    for sample in samples:
        pred = sample['pred_instances']
        for box, score, label in zip(np.asarray(pred['bboxes']), np.asarray(pred['scores']),
                                     np.asarray(pred['labels']), strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            dets.append(dict(image_id=sample['img_id'], category_id=cat_ids[int(label)],
                             bbox=[x1, y1, x2 - x1, y2 - y1], score=float(score)))
    evaluation = COCOeval(gt, gt.loadRes(dets), 'bbox')
    evaluation.params.catIds = cat_ids
    evaluation.params.imgIds = [sample['img_id'] for sample in samples]
    evaluation.params.maxDets = [100, 300, 1000]
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return float(evaluation.stats[0])


@pytest.mark.parametrize('family', sorted(FAMILY_CONFIGS))
def test_family_trains_and_evaluates(family, shapes_root, tmp_path):
    config = FAMILY_CONFIGS[family]
    work = tmp_path / family
    options = shapes_options(shapes_root) + no_worker_options() + [
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'train_dataloader.batch_size=2',
        'default_hooks.logger.interval=1', *KEEP_ALL_BOXES[family]]
    scale_lr = ['--auto-scale-lr'] if family == 'retinanet' else []
    log = run_tool(['tools/train.py', config, '--work-dir', work, *scale_lr,
                    '--cfg-options', *options], timeout=900).output
    if scale_lr:  # batch 2 against the config's base batch 4
        assert 'Scaling the original LR by 0.5' in log, log[-3000:]
    ckpt = work / 'epoch_1.pth'
    assert ckpt.is_file()
    out = run_tool(['tools/test.py', config, ckpt, '--work-dir', work / 'test',
                    '--out', work / 'preds.pkl', '--cfg-options', *options], timeout=600).output
    metrics = json.loads((work / 'test' / 'test_metrics.json').read_text())
    assert re.search(rf"coco/bbox_mAP: {metrics['coco/bbox_mAP']:.4f}", out), out[-2000:]
    # The reported AP is pycocotools' AP of the dumped predictions (-1 would mean that
    # nothing was evaluated).
    ap = _coco_bbox_ap(work / 'preds.pkl', shapes_root / 'annotations' / 'instances_val2017.json')
    assert ap >= 0 and metrics['coco/bbox_mAP'] == pytest.approx(ap, abs=5e-4)
    if family == 'mask_rcnn':
        assert metrics['coco/segm_mAP'] >= 0
    _check_dump(work / 'preds.pkl', family)


def _check_dump(path, family: str) -> None:
    """``--out`` writes mmdet's DumpDetResults: one entry per validation image with its
    predicted boxes, no ground truth, masks as COCO RLE (not H x W arrays)."""
    import pickle
    with open(path, 'rb') as f:
        dump = pickle.load(f)
    assert len(dump) == 2, len(dump)  # the 2 validation images
    for sample in dump:
        assert not {'gt_instances', 'ignored_instances'} & set(sample), sorted(sample)
        pred = sample['pred_instances']
        assert pred['bboxes'].ndim == 2 and pred['bboxes'].shape[1] == 4
        assert len(pred['scores']) == len(pred['labels']) == len(pred['bboxes']) > 0
        if family == 'mask_rcnn':
            assert len(pred['masks']) == len(pred['bboxes'])
            rle = pred['masks'][0]
            assert set(rle) == {'size', 'counts'} and isinstance(rle['counts'], bytes), rle
            assert list(rle['size']) == [sample['ori_shape'][0], sample['ori_shape'][1]]


def test_tool_errors_are_clear(tmp_path):
    result = run_tool(['tools/train.py', 'configs/retinanet/nope.py'], check=False)
    assert result.returncode != 0 and "config file 'configs/retinanet/nope.py' does not exist" in result.stderr
    result = run_tool(['tools/test.py', FAMILY_CONFIGS['retinanet'], tmp_path / 'x.pth'], check=False)
    assert result.returncode != 0 and 'Checkpoint file' in result.stderr and 'does not exist' in result.stderr
    if not torch.cuda.is_available():
        result = run_tool(['tools/train.py', FAMILY_CONFIGS['retinanet'], '--amp',
                           '--work-dir', tmp_path], check=False)
        assert result.returncode != 0 and '--amp needs a CUDA GPU' in result.stderr


def test_resume_continues_from_the_saved_iteration(shapes_root, tmp_path):
    config = FAMILY_CONFIGS['retinanet']
    work = tmp_path / 'resume'
    base = shapes_options(shapes_root) + no_worker_options('train_dataloader', 'val_dataloader') + [
        'train_dataloader.batch_size=2', 'train_cfg.val_interval=100',
        'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1']
    # The first run stops after epoch 1 (as if interrupted before epoch 2).
    run_tool(['tools/train.py', config, '--work-dir', work, '--cfg-options',
              *base, 'train_cfg.max_epochs=1'], timeout=600, env=cpu_only())
    first = torch.load(work / 'epoch_1.pth', weights_only=False, map_location='cpu')
    out = run_tool(['tools/train.py', config, '--work-dir', work, '--resume',
                    '--cfg-options', *base, 'train_cfg.max_epochs=2'], timeout=600,
                   env=cpu_only()).output
    assert f"resumed epoch: 1, iter: {first['meta']['iter']}" in out
    second = torch.load(work / 'epoch_2.pth', weights_only=False, map_location='cpu')
    assert second['meta']['iter'] == 2 * first['meta']['iter']
    assert 'Weights only load failed' not in out


@pytest.mark.compat
def test_dist_train_two_cpu_processes(shapes_root, tmp_path):
    work = tmp_path / 'ddp'
    options = shapes_options(shapes_root) + no_worker_options('train_dataloader', 'val_dataloader') + [
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'train_dataloader.batch_size=1',
        'default_hooks.logger.interval=1', *KEEP_ALL_BOXES['retinanet']]
    out = run_tool(['tools/dist_train.sh', FAMILY_CONFIGS['retinanet'], '2', '--work-dir', work,
                    '--cfg-options', *options],
                   env=cpu_only(dict(PORT=str(29500 + os.getpid() % 1000)))).output
    assert 'Distributed launcher: pytorch' in out and 'Distributed training: True' in out
    assert 'CUDA available: False' in out  # CPU processes (gloo) on any host
    assert 'GPU number: 2' in out  # mmengine's name for the world size
    # 4 images / (2 processes x batch 1) = 2 iterations per process and epoch.
    assert re.search(r'Epoch\(train\) +\[1\]\[2/2\]', out), out[-3000:]
    assert (work / 'epoch_1.pth').is_file()
    assert re.search(r'coco/bbox_mAP: \d\.\d+', out)  # evaluated (-1.0: nothing was)
    # tools/test.py on this stack and on the other one (the oldest / the pinned): a
    # checkpoint trained on either is read and scored the same by both.
    this, other = evaluate_on_both_stacks(FAMILY_CONFIGS['retinanet'], work / 'epoch_1.pth',
                                          tmp_path / 'test', options)
    ap = this['metrics']['coco/bbox_mAP']
    assert ap >= 0
    if other is not None:
        assert abs(ap - other['metrics']['coco/bbox_mAP']) <= 0.002, (this, other)
        assert_same_detections(this['preds'], other['preds'])
