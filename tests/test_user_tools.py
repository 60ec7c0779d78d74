"""User-facing tools: demo inference (DetInferencer / MMSegInferencer), the pyramid picture,
training-curve plots, the mim model index, and pvt_mm used from an unmodified mmdet config.

One tiny RetinaNet run (module fixture) provides a real checkpoint and a real mmengine log.
"""
import json
import os
import pickle
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pvt_mm.models.backbones import archs

from .conftest import (PYTHON, REPO, build_from_config, cached_files, load_tool,
                       no_worker_options, run_tool, shapes_options)
SHAPES_CONFIG = 'configs/retinanet/pvt_tiny_fpn_shapes.py'
FAMILIES = ('retinanet', 'mask_rcnn', 'detr', 'semfpn', 'classification')
SMALL_DATA_SUFFIXES = ('_shapes.py', '_tiny.py')  # smoke-test configs, not in the model index


def _differs(drawn: Path, original: Path) -> float:
    """Fraction of pixels that changed noticeably between an input image and its drawing."""
    a = np.asarray(Image.open(drawn).convert('RGB'), dtype=np.int16)
    b = np.asarray(Image.open(original).convert('RGB'), dtype=np.int16)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((np.abs(a - b).max(-1) > 40).mean())


@pytest.fixture(scope='module')
def trained(shapes_root, tmp_path_factory):
    """A 1-epoch RetinaNet + PVT-Tiny run: (work_dir, checkpoint)."""
    work = tmp_path_factory.mktemp('work') / 'retinanet'
    run_tool(['tools/train.py', SHAPES_CONFIG, '--work-dir', work, '--cfg-options',
              *shapes_options(shapes_root), 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
              'train_dataloader.batch_size=2', *no_worker_options('train_dataloader', 'val_dataloader'),
              'default_hooks.logger.interval=1', 'model.test_cfg.score_thr=0.0'], timeout=900)
    ckpt = work / 'epoch_1.pth'
    assert ckpt.is_file()
    return work, ckpt


# ------------------------------------------------------------------ tools/demo.py
@pytest.mark.compat
def test_demo_draws_detections_on_a_folder(trained, shapes_root, tmp_path, checkpoint_server,
                                           torch_home):
    """Also the checkpoint-URL path: the detector is served over http, downloaded once into
    the torch hub cache and loaded from there (safely) by the inferencer."""
    _, ckpt = trained
    (checkpoint_server.root / 'det.pth').write_bytes(ckpt.read_bytes())
    out_dir = tmp_path / 'vis'
    # An untrained detector scores low: keep every box and draw them all.
    log = run_tool(['tools/demo.py', shapes_root / 'val2017', SHAPES_CONFIG,
                    checkpoint_server.url + 'det.pth',
                    '--out-dir', out_dir, '--score-thr', '0', '--cfg-options',
                    'model.test_cfg.score_thr=0.0', 'model.test_cfg.max_per_img=5'],
                   timeout=600, env={'TORCH_HOME': str(torch_home)}).output
    assert checkpoint_server.requests == ['/det.pth']
    cached, = cached_files(torch_home)
    assert Path(cached).read_bytes() == ckpt.read_bytes()
    inputs = sorted((shapes_root / 'val2017').glob('*.jpg'))
    assert len(inputs) == 2 and '2/2' in log  # the progress bar went through both images
    for image in inputs:
        drawn = out_dir / f'{image.stem}.png'
        assert drawn.is_file(), log[-2000:]
        assert _differs(drawn, image) > 0.002  # boxes and labels were drawn
    assert sorted(p.name for p in out_dir.iterdir()) == [f'{p.stem}.png' for p in inputs]


def test_demo_video(trained, shapes_root, tmp_path):
    import cv2
    _, ckpt = trained
    video = tmp_path / 'clip.mp4'
    frames = [cv2.imread(str(p)) for p in sorted((shapes_root / 'val2017').glob('*.jpg'))] * 2
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'mp4v'), 5.0,
                             (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    out_dir = tmp_path / 'vis'
    demo = load_tool('tools/demo.py')
    assert demo.main([str(video), SHAPES_CONFIG, str(ckpt), '--out-dir', str(out_dir),
                      '--score-thr', '0', '--cfg-options', 'model.test_cfg.score_thr=0.0',
                      'model.test_cfg.max_per_img=3']) == 0
    assert sorted(os.listdir(out_dir)) == ['clip.mp4']  # no temporary file left behind
    capture = cv2.VideoCapture(str(out_dir / 'clip.mp4'))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count == len(frames)


def test_demo_segmentation(shapes_root, tmp_path):
    """mmseg configs go through MMSegInferencer and draw a segmentation map."""
    config = 'configs/semfpn/pvt_tiny_fpn_ade20k_tiny.py'
    torch.manual_seed(0)
    cfg, model = build_from_config(config)
    model.init_weights()
    ckpt = tmp_path / 'semfpn.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    image = sorted((shapes_root / 'val2017').glob('*.jpg'))[0]
    demo = load_tool('tools/demo.py')
    assert demo.main([str(image), str(REPO / config), str(ckpt), '--out-dir', str(tmp_path / 'vis'),
                      '--opacity', '0.6']) == 0
    drawn = tmp_path / 'vis' / f'{image.stem}.png'
    assert _differs(drawn, image) > 0.5  # the class map is blended over the whole image
    # Class names and palette come from the config's dataset (ADE20K), not a fallback.
    from mmseg.datasets import ADE20KDataset
    seg_meta = demo.config_metainfo(cfg, 'mmseg')
    assert list(seg_meta['classes']) == list(ADE20KDataset.METAINFO['classes'])


def test_demo_errors_are_clear(trained, shapes_root, tmp_path, capsys):
    _, ckpt = trained
    demo = load_tool('tools/demo.py')
    image = str(sorted((shapes_root / 'val2017').glob('*.jpg'))[0])
    junk = tmp_path / 'junk.jpg'
    junk.write_text('not an image')
    empty = tmp_path / 'empty'
    empty.mkdir()
    bad_ckpt = tmp_path / 'bad.pth'
    bad_ckpt.write_bytes(b'\x00' * 100)
    # Backbone weights alone: refused by the same check as tools/test.py's, with the fix.
    backbone_only = tmp_path / 'backbone.pth'
    state = torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']
    torch.save({k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')},
               backbone_only)
    out = tmp_path / 'out'
    cases = [
        ([str(tmp_path / 'nope.jpg'), SHAPES_CONFIG, str(ckpt)], r"input '.*nope\.jpg' does not exist"),
        ([image, 'configs/nope.py', str(ckpt)], r"config file 'configs/nope\.py' does not exist"),
        ([image, SHAPES_CONFIG, str(tmp_path / 'x.pth')], r"(?i)checkpoint file '.*x\.pth' does not exist"),
        ([image, SHAPES_CONFIG, str(bad_ckpt)], r"(Cannot read checkpoint|Refused to load) '.*bad\.pth'"),
        ([image, SHAPES_CONFIG, str(backbone_only)],
         r"'.*backbone\.pth' holds no .backbone\.. weights .*backbone-only .* model\.backbone\.init_cfg"),
        ([str(junk), SHAPES_CONFIG, str(ckpt)], r"cannot read image '.*junk\.jpg'"),
        ([str(empty), SHAPES_CONFIG, str(ckpt)], r"directory '.*empty' holds no images"),
        ([image, 'configs/classification/pvt_tiny_in1k_tiny.py', str(ckpt)],
         r"default_scope='mmpretrain'"),
    ]
    for argv, message in cases:
        assert demo.main(argv + ['--out-dir', str(out)]) == 2, argv
        assert re.search(message, capsys.readouterr().err), (argv, message)
    assert not out.exists() or not os.listdir(out)  # nothing partial written


# ------------------------------------------------------------------ visualize_pyramid.py
def test_visualize_pyramid_random_and_trained(trained, shapes_root, tmp_path):
    _, ckpt = trained
    tool = load_tool('tools/analysis/visualize_pyramid.py')
    image = str(sorted((shapes_root / 'val2017').glob('*.jpg'))[0])
    plain, attn = tmp_path / 'plain.png', tmp_path / 'attn.png'
    assert tool.main([image, SHAPES_CONFIG, '--out', str(plain), '--size', '256']) == 0
    assert tool.main([image, SHAPES_CONFIG, str(ckpt), '--out', str(attn), '--size', '256',
                      '--attn-query', '100', '60']) == 0
    with Image.open(plain) as a, Image.open(attn) as b:
        assert a.format == b.format == 'PNG'
        assert b.width == a.width and b.height > 1.5 * a.height  # a second row of attention maps
        assert np.asarray(a.convert('L')).std() > 10  # not a blank canvas
    assert sorted(os.listdir(tmp_path)) == ['attn.png', 'plain.png']  # no temporary files


def test_pyramid_matches_the_backbone_and_explicit_attention_matches_sdpa():
    """The pyramid comes from the backbone's own forward and SRA is recomputed explicitly
    from its modules: both must agree with the model's own (fused) forward."""
    from pvt_mm.models.attention_maps import pyramid, sra_attention
    tool = load_tool('tools/analysis/visualize_pyramid.py')
    torch.manual_seed(0)
    backbone, _ = tool.build_backbone(str(REPO / SHAPES_CONFIG))
    img = torch.randn(1, 3, 96, 128)
    stages = pyramid(backbone, img, query_xy=(50.0, 30.0), layer=0)
    with torch.no_grad():
        outs = backbone(img)
    assert len(stages) == 4
    for info, out, stride in zip(stages, outs, (4, 8, 16, 32), strict=True):
        assert info['stride'] == stride
        torch.testing.assert_close(torch.from_numpy(info['feature']), out[0], atol=1e-4, rtol=1e-4)
        r = info['sr_ratio']
        assert info['attention'].shape == (96 // stride // r, 128 // stride // r)
        assert info['attention'].sum() == pytest.approx(1.0, abs=1e-4)  # mean over heads of softmax rows
    # Explicit weights @ v through the output projection == the fused SDPA module output.
    for stage in backbone.stages:
        layer = stage.layers[0]
        x = torch.randn(2, 12 * 16, layer.attn.q.in_features)
        with torch.no_grad():
            weights, v, _ = sra_attention(layer.attn, x, (12, 16))
            explicit = layer.attn.proj((weights @ v).transpose(1, 2).reshape(x.shape))
            fused = layer.attn(x, (12, 16))
        torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-4)


def test_visualize_pyramid_errors(shapes_root, tmp_path, capsys):
    tool = load_tool('tools/analysis/visualize_pyramid.py')
    image = str(sorted((shapes_root / 'val2017').glob('*.jpg'))[0])
    out = str(tmp_path / 'p.png')
    cases = [
        ([str(tmp_path / 'no.jpg'), SHAPES_CONFIG, '--out', out], r"image '.*no\.jpg' does not exist"),
        ([image, 'configs/nope.py', '--out', out], r"config file 'configs/nope\.py' does not exist"),
        ([image, SHAPES_CONFIG, str(tmp_path / 'w.pth'), '--out', out], r"checkpoint file .* does not exist"),
        ([image, SHAPES_CONFIG, '--out', out, '--attn-query', '999', '5'], r'outside the 320x256 image'),
        ([image, SHAPES_CONFIG, '--out', str(tmp_path / 'p.jpg')], r'--out must be a \.png'),
    ]
    for argv, message in cases:
        assert tool.main(argv) == 2, argv
        assert re.search(message, capsys.readouterr().err), (argv, message)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ analyze_logs.py
def test_plot_curves_from_a_real_work_dir(trained, tmp_path, capsys):
    work, _ = trained
    tool = load_tool('tools/analysis/analyze_logs.py')
    scalars = sorted(work.glob('*/vis_data/scalars.json'))
    assert len(scalars) == 1
    records = [json.loads(line) for line in scalars[0].read_text().splitlines() if line.strip()]
    curves = tool.collect_curves(str(scalars[0]), ['loss', 'bbox_mAP'])
    assert set(curves) == {'loss', 'coco/bbox_mAP'}
    assert curves['loss'][0] == 'iter' and curves['coco/bbox_mAP'][0] == 'epoch'
    assert curves['loss'][2] == [r['loss'] for r in records if 'loss' in r]
    assert curves['coco/bbox_mAP'][1] == [1]

    out = tmp_path / 'curves.png'
    assert tool.main(['plot_curve', str(work), str(scalars[0]), '--keys', 'loss', 'bbox_mAP',
                      '--legend', 'run', 'same run', '--out', str(out)]) == 0
    with Image.open(out) as png:
        assert png.format == 'PNG' and png.width > png.height  # two panels side by side
    capsys.readouterr()
    assert tool.main(['plot_curve', str(work), '--keys', 'mIoU', '--out', str(tmp_path / 'x.png')]) == 2
    assert 'none of the keys' in capsys.readouterr().err and not (tmp_path / 'x.png').exists()
    assert tool.main(['plot_curve', str(tmp_path / 'nowhere'), '--out', str(tmp_path / 'y.png')]) == 2
    assert 'does not exist' in capsys.readouterr().err


# ------------------------------------------------------------------ model index / mim
def _load_index():
    index = yaml.safe_load((REPO / 'model-index.yml').read_text())
    metafiles = {}
    for path in index['Import']:
        assert (REPO / path).is_file(), path
        metafiles[path] = yaml.safe_load((REPO / path).read_text())
    return metafiles


def test_model_index_lists_every_config():
    metafiles = _load_index()
    assert {Path(p).parent.name for p in metafiles} == set(FAMILIES)
    listed, names = set(), []
    for path, meta in metafiles.items():
        collections = {c['Name']: c for c in meta['Collections']}
        for coll in meta['Collections']:
            v2 = coll['Name'].endswith('PVTv2')
            assert coll['Paper']['URL'] == ('https://arxiv.org/abs/2106.13797' if v2 else
                                            'https://arxiv.org/abs/2102.12122')
            assert coll['Metadata']['Training Data']
        for model in meta['Models']:
            names.append(model['Name'])
            assert model['In Collection'] in collections, model['Name']
            assert (REPO / model['Config']).is_file(), model['Config']
            assert Path(model['Config']).parent == Path(path).parent
            assert model['Metadata']['Training Data']
            assert isinstance(model['Metadata']['Parameters'], int)
            assert model.get('Weights') is None  # no trained weights are hosted
            # v1: the paper's tables; v2: the official release's READMEs (with measured FLOPs).
            if model['In Collection'].endswith('PVTv2'):
                assert Path(model['Config']).name.startswith('pvtv2_')
                assert re.match(r'official .*README \(https://github\.com/whai362/', model['Results Source'])
                assert isinstance(model['Metadata']['FLOPs'], int)
            else:
                assert model['Results Source'].startswith('paper Table')
            for result in model['Results']:
                assert result['Task'] and result['Dataset']
                assert result['Metrics'] and all(isinstance(v, float) and 0 < v < 100
                                                 for v in result['Metrics'].values())
            listed.add(model['Config'])
    assert len(names) == len(set(names)), 'model names must be unique'
    on_disk = {str(p.relative_to(REPO)) for family in FAMILIES
               for p in (REPO / 'configs' / family).glob('*.py')
               if not p.name.endswith(SMALL_DATA_SUFFIXES)}
    assert listed == on_disk


def _index_parameters() -> dict:
    """config path -> the Parameters metadata of its model-index entry."""
    return {m['Config']: m['Metadata']['Parameters']
            for meta in _load_index().values() for m in meta['Models']}


def test_model_index_parameters_match_the_configs():
    """Spot-check v1's Parameters metadata against a built model (the family suites check the
    built v1 counts against the paper's tables; v2's are checked independently below)."""
    params = _index_parameters()
    for config in ('configs/retinanet/pvt_tiny_fpn_1x_coco.py',
                   'configs/semfpn/pvt_tiny_fpn_80k_ade20k.py'):
        _, built = build_from_config(config)
        assert sum(p.numel() for p in built.parameters()) == params[config]


# The official PVT v2 release's b1-b5 (pvt_v2.py): widths 64/128/320/512, these depths.
OFFICIAL_V2 = {'b1': dict(depths=(2, 2, 2, 2)), 'b2': dict(depths=(3, 4, 6, 3)),
               'b2_li': dict(depths=(3, 4, 6, 3), linear=True), 'b3': dict(depths=(3, 4, 18, 3)),
               'b4': dict(depths=(3, 8, 27, 3)),
               'b5': dict(depths=(3, 6, 40, 3), mlp_ratios=(4, 4, 4, 4))}


@pytest.mark.parametrize('family', ['retinanet', 'mask_rcnn', 'semfpn'])
def test_model_index_v2_parameters_are_counted_independently(family):
    """The index's v2 counts were measured with pvt_mm. b0 and b1 are counted again with
    mmdet's own PyramidVisionTransformerV2 (as mmdet's retinanet_pvtv2-bX_fpn_1x_coco.py
    defines it) in place of pvt_mm's backbone: exactly equal. b2-b5 and b2_li share b1's
    widths, so neck and heads: each must exceed b1's count by exactly what the official
    model's backbone adds (counted without weights)."""
    from mmengine.hub import get_config

    from pvt_mm.config import build_from_config as build

    from .official_pvt_v2 import OfficialPVTv2

    def count(model):
        return sum(p.numel() for p in model.parameters())

    params = _index_parameters()
    config = {arch: 'configs/' + archs.arch_row(arch).config_file(family)
              for arch in ('b0', *OFFICIAL_V2)}
    for arch in ('b0', 'b1'):
        backbone = get_config(f'mmdet::pvt/retinanet_pvtv2-{arch}_fpn_1x_coco.py').model.backbone
        backbone.update(type='mmdet.PyramidVisionTransformerV2', init_cfg=None, _delete_=True)
        built, _ = build(str(REPO / config[arch]), {'model.backbone': backbone.to_dict()})
        assert type(built.backbone).__name__ == 'PyramidVisionTransformerV2'
        assert count(built) == params[config[arch]], config[arch]
    with torch.device('meta'):
        official = {arch: count(OfficialPVTv2(dims=(64, 128, 320, 512), **kw))
                    for arch, kw in OFFICIAL_V2.items()}
    for arch in ('b2', 'b2_li', 'b3', 'b4', 'b5'):
        if family not in archs.arch_row(arch).families:
            continue  # b2_li: not in the official PVTv2-Seg release
        assert params[config[arch]] - params[config['b1']] == official[arch] - official['b1'], \
            config[arch]


def test_mim_can_read_the_index():
    """Parse model-index.yml with `model-index`, the parser `mim search` uses (openmim itself
    is not installed: its openxlab dependency pins setuptools 60, which torch 2.14 refuses)."""
    from modelindex.load_model_index import load
    index = load(str(REPO / 'model-index.yml'))
    index.build_models_with_collections()
    assert len(index.collections) == 9  # 5 of v1, 4 of v2 (no v2 DETR)
    names = [model.name for model in index.models]
    assert len(names) == len(set(names)) >= 23 + 27
    for model in index.models:
        assert (REPO / model.config).is_file(), model.config
        assert model.in_collection in {c.name for c in index.collections}


def test_pip_install_ships_the_mim_extension(tmp_path):
    """`pip install .` (built from a copy of the repository into a --target folder, never
    into the environment) copies configs, tools and model-index.yml into pvt_mm/.mim."""
    src = tmp_path / 'src'
    # '.venv*': the stacks tools/setup_env.sh builds in the checkout (GBs; CI ran out of disk).
    ignore = shutil.ignore_patterns('.git', '.venv*', '.gpu-kit', 'data', 'work_dirs', 'build', 'dist',
                                    '*.egg-info', '.mim', '__pycache__', '.pytest_cache', '*.pth')
    shutil.copytree(REPO, src, ignore=ignore, symlinks=True)
    target = tmp_path / 'target'
    run_tool([PYTHON, '-m', 'pip', 'install', src, '--no-deps', '--no-build-isolation',
              '--no-index', '--quiet', '--target', target], timeout=300)
    mim = target / 'pvt_mm' / '.mim'
    assert (mim / 'model-index.yml').read_text() == (REPO / 'model-index.yml').read_text()
    for meta in _load_index().values():
        for model in meta['Models']:
            assert (mim / model['Config']).is_file(), model['Config']
    assert (mim / 'tools' / 'train.py').is_file() and (mim / 'tools' / 'demo.py').is_file()
    assert not (mim / 'configs').is_symlink()  # copied, not linked, in a regular install


# ------------------------------------------------------------------ cross-project config
EXAMPLE = 'configs/examples/faster_rcnn_pvt_small_fpn_1x_coco.py'


def test_example_swaps_the_backbone_of_an_unmodified_mmdet_config():
    import pvt_mm  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    assert "_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'" in (REPO / EXAMPLE).read_text()
    cfg = Config.fromfile(str(REPO / EXAMPLE))
    assert cfg.custom_imports['imports'] == ['pvt_mm']
    assert set(cfg.model.backbone) == {'type', 'arch', 'out_indices', 'drop_path_rate', 'init_cfg'}
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == 'PVT' and type(model).__name__ == 'FasterRCNN'
    assert list(cfg.model.neck.in_channels) == list(model.backbone.out_channels) == [64, 128, 320, 512]
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 128, 160))
    assert [f.shape[-2:] for f in feats] == [(32, 40), (16, 20), (8, 10), (4, 5), (2, 3)]


def test_example_trains_a_few_iterations(shapes_root, tmp_path):
    # Point the example at the embedded data at 320x256 without touching the example.
    config = tmp_path / 'example_shapes.py'
    config.write_text(f'''
_base_ = {str(REPO / EXAMPLE)!r}
data_root = {str(shapes_root) + '/'!r}
model = dict(backbone=dict(init_cfg=None))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(256, 192), keep_ratio=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline, indices=2))
train_cfg = dict(max_epochs=1, val_interval=10)
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None
default_hooks = dict(logger=dict(interval=1))
''')
    work = tmp_path / 'work'
    log = run_tool(['tools/train.py', config, '--work-dir', work], timeout=600).output
    losses = [float(x) for x in re.findall(r'\bloss: ([\d.]+)', log)]
    assert len(losses) == 2 and all(np.isfinite(losses)), log[-3000:]  # 2 images / batch 1
    assert 'loss_rpn_cls' in log and 'loss_bbox' in log
    assert (work / 'epoch_1.pth').is_file()


def test_draw_predictions_names_labels_by_the_config(shapes_root, tmp_path):
    # The shapes configs keep 3 of the json's 80 categories: label 0 is 'sports ball'
    # (drawn as 'circle'), not COCO's first category 'person'.
    from pvt_mm.threshold_metrics import label_categories
    ann_file = shapes_root / 'annotations' / 'instances_val2017.json'
    categories = json.loads(ann_file.read_text())['categories']
    labelled = label_categories(categories, ('sports ball', 'kite', 'tv'))
    assert [c['name'] for c in labelled] == ['sports ball', 'kite', 'tv']
    assert label_categories(categories, None)[0]['name'] == 'person'
    with pytest.raises(ValueError, match='not categories of the annotation file'):
        label_categories(categories, ('sports ball', 'hexagon'))

    image = json.loads(ann_file.read_text())['images'][0]
    preds = [dict(img_id=image['id'], pred_instances=dict(
        bboxes=torch.tensor([[10., 10., 60., 60.]]), scores=torch.tensor([0.9]),
        labels=torch.tensor([0])))]
    preds_file = tmp_path / 'preds.pkl'
    preds_file.write_bytes(pickle.dumps(preds))
    out = tmp_path / 'predictions.png'
    run_tool(['tools/misc/draw_predictions.py', ann_file, preds_file, out, '--num', '1',
              '--config', SHAPES_CONFIG])
    assert out.stat().st_size > 5_000


# ------------------------------------------------------------------ Slurm launch scripts
def _fake_srun(tmp_path: Path) -> Dict[str, str]:
    """A PATH whose ``srun`` prints the port and arguments it was given (no Slurm here)."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text('#!/bin/sh\necho "MASTER_PORT=${MASTER_PORT:-unset}"\necho "ARGS $*"\n')
    srun.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ('PORT', 'MASTER_PORT', 'SLURM_JOB_ID')}
    return dict(env, PATH=f'{bin_dir}:{os.environ["PATH"]}')


def _srun_port(env: Dict[str, str], script: str = 'tools/slurm_train.sh') -> int:
    proc = subprocess.run(['bash', script, 'part', 'job', 'cfg.py', 'ckpt_or_dir'], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    assert '--launcher=slurm' in proc.stdout, proc.stdout
    return int(re.search(r'MASTER_PORT=(\d+)', proc.stdout)[1])


def test_slurm_jobs_get_their_own_master_port(tmp_path):
    """Two jobs on one node must not both take torch's default 29500: the port is derived
    per job (Slurm job id, else the launching shell), and PORT / MASTER_PORT override it."""
    env = _fake_srun(tmp_path)
    ports = {_srun_port(env), _srun_port(env, 'tools/slurm_test.sh'),
             _srun_port(dict(env, SLURM_JOB_ID='1234567'))}
    assert len(ports) == 3 and all(20000 <= p < 40000 for p in ports), ports
    assert _srun_port(dict(env, SLURM_JOB_ID='1234567')) == 20000 + 1234567 % 20000
    assert _srun_port(dict(env, PORT='29123')) == 29123
    assert _srun_port(dict(env, PORT='29123', MASTER_PORT='29777')) == 29777
