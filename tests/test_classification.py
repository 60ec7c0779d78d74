"""ImageNet classification configs (mmpretrain): every config builds with the published
parameter counts and GFLOPs (v1: paper Table 2; v2: official README and paper) and the DeiT
recipe; v2's classifier (stage-4 map + GlobalAveragePooling + linear head) is the official
mean-pooled model; the classifier trains with 2 CPU processes through tools/dist_train.sh,
reports top-1 through tools/test.py, and its checkpoint loads back as a segmentation /
detection backbone through init_cfg like the official weights."""
import json
import re
from pathlib import Path
from typing import Optional

import pytest
import torch
from mmengine.config import Config

from pvt_mm.capabilities import COMPILE
from pvt_mm.models.backbones import archs

from .conftest import (CLS_TINY_CONFIG, REPO, build_from_config, imagenet_options,
                       predict_random_image, run_tool)
from .official_pvt_v2 import OfficialPVTv2

# The arch table's published counts (v1: paper Table 2; v2: the official README and the
# sources archs.ARCH_TABLE names): config -> (M params of the classifier, GFLOPs at 224x224).
TABLE2 = {row.config_file('classification'): (row.params_m, row.gflops)
          for row in archs.rows('v1') if 'classification' in row.families}
V2_TABLE = {row.config_file('classification'): (row.params_m, row.gflops)
            for row in archs.rows('v2') if 'classification' in row.families}
CLS_CONFIGS = sorted(str(p.relative_to(REPO / 'configs'))
                     for p in (REPO / 'configs' / 'classification').glob('*.py'))
TINY_CONFIG = CLS_TINY_CONFIG
# Measured: the 2-step run scores 37.5 % top-1 (3 of the 8 validation images); an untrained
# classifier 0 %. At least one image right: the run learned which 4 of 1000 classes occur.
TOP1_FLOOR = 12.5


def test_every_table_config_is_listed():
    assert {c for c in CLS_CONFIGS if c.endswith('_in1k.py')} == set(TABLE2) | set(V2_TABLE)


def test_model_index_v2_parameters_are_the_official_counts():
    """The index's v2 counts (measured with pvt_mm) within rounding of the official README's."""
    import yaml
    meta = yaml.safe_load((REPO / 'configs' / 'classification' / 'metafile.yml').read_text())
    params = {m['Config']: m['Metadata']['Parameters'] for m in meta['Models']}
    for config, (official, _) in V2_TABLE.items():
        assert abs(params[f'configs/{config}'] / 1e6 - official) <= 0.05, config


@pytest.mark.parametrize('config', CLS_CONFIGS)
def test_config_builds(config):
    cfg, model = build_from_config(config)
    assert type(model).__name__ == 'ImageClassifier'
    if config in V2_TABLE:  # mean-pooled last-stage tokens, no class token
        assert type(model.backbone).__name__ == 'PVTv2' and model.backbone.out_indices == (3, )
        assert type(model.neck).__name__ == 'GlobalAveragePooling'
        deep = archs.arch_row(cfg.model.backbone.arch).deep  # official drop-path / clipping
        assert cfg.model.backbone.drop_path_rate == (0.3 if deep else 0.1)
        assert cfg.optim_wrapper.get('clip_grad') == (dict(max_norm=1.0) if deep else None)
    else:
        assert type(model.backbone).__name__ == 'PVT' and model.backbone.with_cls_token
    assert type(model.head).__name__ == 'LinearClsHead'
    assert model.head.fc.in_features == model.backbone.embed_dims[-1]
    assert model.head.fc.out_features == 1000
    assert cfg.custom_imports['imports'] == ['pvt_mm']
    # The DeiT recipe (paper section 5.1).
    assert cfg.model.head.loss.type == 'LabelSmoothLoss' and cfg.model.head.loss.label_smooth_val == 0.1
    assert [(a.type, a.alpha) for a in cfg.model.train_cfg.augments] == [('Mixup', 0.8), ('CutMix', 1.0)]
    train = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    assert {'RandomResizedCrop', 'RandomFlip', 'RandAugment', 'RandomErasing'} <= set(train)
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'AdamW' and opt.weight_decay == 0.05
    assert [s.type for s in cfg.param_scheduler] == ['LinearLR', 'CosineAnnealingLR']
    assert cfg.train_dataloader.dataset.type == 'ImageNet' and cfg.val_evaluator.type == 'Accuracy'
    if config in TABLE2 or config in V2_TABLE:
        expected = (TABLE2.get(config) or V2_TABLE[config])[0]
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert abs(params - expected) <= 0.05, f'{params:.4f} M vs published {expected} M'
        # lr 5e-4 per 512 images of total batch: 8 GPUs x 128 = 1024 -> 1e-3.
        assert opt.lr == pytest.approx(5e-4 * 8 * cfg.train_dataloader.batch_size / 512)
        assert cfg.auto_scale_lr.base_batch_size == 8 * cfg.train_dataloader.batch_size
        assert cfg.train_cfg.max_epochs == 300 and cfg.param_scheduler[-1].end == 300
        test = {t['type']: t for t in cfg.test_dataloader.dataset.pipeline}
        assert test['ResizeEdge']['scale'] == 256 and test['ResizeEdge']['edge'] == 'short'
        assert test['CenterCrop']['crop_size'] == 224
        assert cfg.model.backbone.init_cfg is None  # from scratch, as the paper


@pytest.mark.parametrize('config', sorted(TABLE2) + [c for c, v in V2_TABLE.items() if v[1]])
def test_gflops_match_the_papers(config):
    from pvt_mm.flops import classifier_flops
    _, model = build_from_config(config)
    gflops = classifier_flops(model, (224, 224)) / 1e9
    paper = (TABLE2.get(config) or V2_TABLE[config])[1]
    assert abs(gflops - paper) / paper <= 0.05, f'{gflops:.3f} GFLOPs vs paper {paper}'


def test_v2_classifier_is_the_official_mean_pooled_model(tmp_path):
    """Official-format v2-b0 weights through the config's own path (backbone via init_cfg,
    the official head copied into LinearClsHead): the logits of the official classifier
    (head on the mean of the normalised stage-4 tokens), at 224x224 and an odd size."""
    torch.manual_seed(0)
    official = OfficialPVTv2().perturb_norms_().eval()
    path = tmp_path / 'pvt_v2_b0.pth'
    torch.save({'model': official.state_dict()}, path)
    _, model = build_from_config('classification/pvtv2_b0_in1k.py')
    model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(path))
    model.init_weights()
    model.head.fc.load_state_dict(official.head.state_dict())
    model.eval()
    for size in ((224, 224), (61, 93)):
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(model(x, mode='tensor'), official(x), atol=2e-5, rtol=1e-4)


def test_v2_classifier_predicts_on_a_small_image():
    _, model = build_from_config('classification/pvtv2_b0_in1k.py')
    model.init_weights()
    (pred, ) = predict_random_image(model, 'mmpretrain', (64, 64))
    assert pred.pred_score.shape == (1000, ) and torch.isfinite(pred.pred_score).all()
    assert pred.pred_score.sum().item() == pytest.approx(1.0, abs=1e-4)


# ------------------------------------------------------------------ end to end on CPU
def test_generated_data_is_imagenet_layout(imagenet_root):
    from mmpretrain.datasets import ImageNet
    train = ImageNet(data_root=str(imagenet_root), split='train', pipeline=[])
    val = ImageNet(data_root=str(imagenet_root), split='val', pipeline=[])
    assert len(train) == 16 and len(val) == 8 and len(train.CLASSES) == 1000
    assert sorted(set(train.get_gt_labels().tolist())) == [0, 1, 2, 3]
    assert train[0]['img_path'].endswith('train/n01440764/n01440764_1.JPEG')
    assert sorted(p.name for p in (imagenet_root / 'train').iterdir()) == [
        'n01440764', 'n01443537', 'n01484850', 'n01491361']
    assert all(p.suffix == '.JPEG' for p in (imagenet_root / 'val').iterdir())


@pytest.mark.compat
def test_dist_train_two_cpu_processes_reports_top1(trained_classifier):
    work, out = trained_classifier.work, trained_classifier.train_output
    assert 'Distributed launcher: pytorch' in out and 'Distributed training: True' in out
    assert 'CUDA available: False' in out  # CPU processes (gloo) on any host
    # 16 images, 4 per process per step: 2 iterations make the epoch with 2 processes
    # (a single process would need 4).
    assert re.search(r'Epoch\(train\)\s+\[1\]\[2/2\].*loss: [\d.]+', out), out[-3000:]
    assert re.search(r'Epoch\(val\) \[1\]\[\d+/\d+\]\s+accuracy/top1: [\d.]+', out), out[-3000:]
    assert (work / 'epoch_1.pth').is_file()


def _top1(imagenet_root: Path, checkpoint: Optional[Path]) -> float:
    """Top-1 (%) on the validation images, counted here from the model's predictions (not by
    mmpretrain's Accuracy metric); ``checkpoint=None``: an untrained classifier."""
    from mmengine.runner import Runner, load_checkpoint

    from pvt_mm.config import build_from_config as build
    torch.manual_seed(0)
    options = {f'test_dataloader.{k}': v for k, v in (
        ('dataset.data_root', f'{imagenet_root}/'), ('num_workers', 0),
        ('persistent_workers', False))}
    # As mmengine's Runner does: the config's top-level data_preprocessor goes to the model.
    options['model.data_preprocessor'] = Config.fromfile(
        str(REPO / TINY_CONFIG)).data_preprocessor.to_dict()
    model, cfg = build(str(REPO / TINY_CONFIG), options)
    model.init_weights()
    if checkpoint is not None:
        load_checkpoint(model, str(checkpoint), map_location='cpu')
    right = total = 0
    with torch.no_grad():
        for batch in Runner.build_dataloader(cfg.test_dataloader):
            for sample in model.test_step(batch):
                right += int(sample.pred_label == sample.gt_label)
                total += 1
    assert total == 8
    return 100.0 * right / total


@pytest.mark.compat
def test_test_tool_reports_top1(trained_classifier, imagenet_root):
    """Also ``--compile``: mmengine 0.10.7 compiles only in train(), tools/test.py compiles
    the test_step its test loop calls; dynamo's log shows it traced (backend 'eager' from
    the fixture's options: tracing without code generation, about 15 s here)."""
    run = trained_classifier
    work, out = run.work, run.test_output
    if COMPILE.available:  # the fixture compiled where this torch can
        assert re.search(r'torchdynamo start tracing test_step \S*mmengine/model/base_model/', out), \
            out[-3000:]
    top1 = run.metrics['accuracy/top1']
    assert re.search(rf'accuracy/top1: {top1:.4f}', out), out[-2000:]
    # It is the accuracy of the checkpoint's predictions, and above what an untrained
    # 1000-way classifier scores: the 2 steps taught it which 4 classes occur.
    assert top1 == pytest.approx(_top1(imagenet_root, work / 'epoch_1.pth'))
    assert top1 >= TOP1_FLOOR > _top1(imagenet_root, None)


@pytest.mark.parametrize('config', ['semfpn/pvt_tiny_fpn_80k_ade20k.py',
                                    'retinanet/pvt_tiny_fpn_1x_coco.py'])
def test_trained_classifier_loads_as_dense_backbone(trained_classifier, config):
    """The classifier checkpoint goes through the same init_cfg=Pretrained path as the
    official weights: backbone. prefix stripped, class slot and final norm dropped."""
    import pvt_mm  # noqa: F401
    from mmengine.registry import DefaultScope, init_default_scope
    from mmengine.logging import MMLogger
    from pvt_mm.checkpoint import read_checkpoint
    work = trained_classifier.work
    ckpt = work / 'epoch_1.pth'
    state = read_checkpoint(str(ckpt))['state_dict']
    assert 'backbone.stages.3.cls_token' in state and 'head.fc.weight' in state

    cfg = Config.fromfile(str(REPO / 'configs' / config))
    cfg.model.backbone.init_cfg.checkpoint = str(ckpt)
    scope = 'mmseg' if config.startswith('semfpn') else 'mmdet'
    init_default_scope(scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    model = registry.build(cfg.model)
    MMLogger.get_instance('mmengine')  # print_log(logger='current') needs one
    model.backbone.init_weights()
    backbone = model.backbone.state_dict()
    assert model.backbone.stages[3].cls_token is None
    for key, value in backbone.items():
        source = state[f'backbone.{key}']
        if key == 'stages.3.pos_embed':  # class slot dropped (grids equal at 224)
            source = source[:, 1:]
        assert torch.equal(value, source), key
    DefaultScope._instance_dict.pop(DefaultScope.get_current_instance().instance_name, None)


def test_exported_classifier_predictions_are_the_heads_own():
    """test_onnx.py turns an exported classifier's logits into data samples without
    mmpretrain's private ``_get_predictions``: the scores and labels equal those of the
    head's public ``predict`` on the same features."""
    from mmpretrain.structures import DataSample

    from pvt_mm.deploy.evaluate import _classification_samples
    _, model = build_from_config(CLS_TINY_CONFIG)
    torch.manual_seed(0)
    feats = (torch.randn(3, model.head.in_channels), )
    with torch.no_grad():
        expected = model.head.predict(feats, [DataSample() for _ in range(3)])
        got = _classification_samples(model.head(feats), [DataSample() for _ in range(3)])
    assert len(got) == len(expected) == 3
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.pred_score, b.pred_score, rtol=0, atol=0)
        assert a.pred_label.tolist() == b.pred_label.tolist()
    assert not torch.equal(got[0].pred_score, got[1].pred_score)  # three different inputs
