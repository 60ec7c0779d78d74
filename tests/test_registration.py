"""`custom_imports=dict(imports=['pvt_mm'])` makes `type='PVT'` build under the mmdet,
mmseg and mmpretrain scopes. Each case runs in a fresh interpreter that never imports
pvt_mm itself, so only the config's custom_imports can have registered PVT."""
import json
import textwrap

import pytest

from .conftest import run_tool

pytestmark = pytest.mark.compat

HEADER = "custom_imports = dict(imports=['pvt_mm'], allow_failed_imports=False)\n"

CONFIGS = {
    'mmdet': """
        default_scope = 'mmdet'
        model = dict(
            type='RetinaNet',
            data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                                   std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
            backbone=dict(type='PVT', arch='tiny'),
            neck=dict(type='FPN', in_channels=[64, 128, 320, 512], out_channels=64,
                      start_level=1, add_extra_convs='on_input', num_outs=5),
            bbox_head=dict(
                type='RetinaHead', num_classes=3, in_channels=64, feat_channels=64, stacked_convs=1,
                anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                      scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                      strides=[8, 16, 32, 64, 128]),
                bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                                target_stds=[1.0, 1.0, 1.0, 1.0]),
                loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                loss_bbox=dict(type='L1Loss', loss_weight=1.0)))
        shape = (1, 3, 128, 160)
        """,
    'mmseg': """
        default_scope = 'mmseg'
        model = dict(
            type='EncoderDecoder',
            data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                                   std=[58.395, 57.12, 57.375], bgr_to_rgb=True, size=(128, 128)),
            backbone=dict(type='PVT', arch='tiny'),
            neck=dict(type='FPN', in_channels=[64, 128, 320, 512], out_channels=64, num_outs=4),
            decode_head=dict(type='FPNHead', in_channels=[64, 64, 64, 64], in_index=[0, 1, 2, 3],
                             feature_strides=[4, 8, 16, 32], channels=32, dropout_ratio=0.1,
                             num_classes=5, norm_cfg=dict(type='GN', num_groups=8),
                             align_corners=False,
                             loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)))
        shape = (1, 3, 128, 128)
        """,
    'mmpretrain': """
        default_scope = 'mmpretrain'
        model = dict(
            type='ImageClassifier',
            backbone=dict(type='PVT', arch='tiny', with_cls_token=True),
            head=dict(type='LinearClsHead', num_classes=1000, in_channels=512,
                      loss=dict(type='CrossEntropyLoss')))
        shape = (1, 3, 224, 224)
        """,
}

PROBE = textwrap.dedent("""
    import json, sys
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    assert 'pvt_mm' not in sys.modules
    cfg = Config.fromfile(sys.argv[1])  # runs custom_imports
    init_default_scope(cfg.default_scope)
    registry = __import__(cfg.default_scope + '.registry', fromlist=['MODELS']).MODELS
    model = registry.build(cfg.model).eval()
    with torch.no_grad():
        out = model(torch.randn(*cfg.shape), mode='tensor')
    out = out if isinstance(out, (tuple, list)) else [out]
    flat = [t for o in out for t in (o if isinstance(o, (tuple, list)) else [o])]
    print(json.dumps(dict(backbone=type(model.backbone).__module__ + '.' + type(model.backbone).__name__,
                          shapes=[list(t.shape) for t in flat])))
""")


def _probe(tmp_path, config_text: str):
    """Build ``config_text``'s model in a fresh interpreter (see PROBE)."""
    config = tmp_path / 'pvt_config.py'
    config.write_text(config_text)
    probe = tmp_path / 'probe.py'
    probe.write_text(PROBE)
    return run_tool([probe, config], check=False, timeout=300)


@pytest.mark.parametrize('scope', sorted(CONFIGS))
def test_custom_imports_build_pvt_in_scope(scope, tmp_path):
    result = _probe(tmp_path, HEADER + textwrap.dedent(CONFIGS[scope]))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report['backbone'] == 'pvt_mm.models.backbones.pvt.PVT'
    if scope == 'mmpretrain':
        assert report['shapes'] == [[1, 1000]]
    elif scope == 'mmseg':
        assert report['shapes'] == [[1, 5, 32, 32]]
    else:  # RetinaNet: class scores and boxes for 5 FPN levels
        assert len(report['shapes']) == 10 and report['shapes'][0] == [1, 27, 16, 20]


def test_without_custom_imports_pvt_is_unknown(tmp_path):
    result = _probe(tmp_path, textwrap.dedent(CONFIGS['mmpretrain']))
    assert result.returncode != 0 and 'PVT is not in the' in result.stderr


def test_registered_scopes():
    import pvt_mm
    assert set(pvt_mm.REGISTERED_SCOPES) == {'mmdet', 'mmseg', 'mmpretrain'}
    from pvt_mm.registry import MODELS
    assert MODELS.get('PVT') is pvt_mm.PVT
