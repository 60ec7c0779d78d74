# Shared by every pvt_mm config: make `type='PVT'` / `type='PVTv2'` buildable, and say where the
# official ImageNet-1k weights live. This is the one place configs take those paths from; they
# are plain data (read without importing pvt_mm) and must be `checkpoints/<the arch table's
# weights file>` (pvt_mm/models/backbones/archs.py; tests/test_arch_table.py names a missing one).
custom_imports = dict(imports=['pvt_mm'], allow_failed_imports=False)

# Download the official PVT v1 and v2 weights, e.g.
#   mkdir -p checkpoints && wget -P checkpoints \
#     https://github.com/whai362/PVT/releases/download/v2/pvt_small.pth \
#     https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b2.pth
# or set `model.backbone.init_cfg=None` to train from scratch.
pvt_pretrained = dict(
    tiny='checkpoints/pvt_tiny.pth',
    small='checkpoints/pvt_small.pth',
    medium='checkpoints/pvt_medium.pth',
    large='checkpoints/pvt_large.pth',
)
pvtv2_pretrained = dict(
    b0='checkpoints/pvt_v2_b0.pth',
    b1='checkpoints/pvt_v2_b1.pth',
    b2='checkpoints/pvt_v2_b2.pth',
    b3='checkpoints/pvt_v2_b3.pth',
    b4='checkpoints/pvt_v2_b4.pth',
    b5='checkpoints/pvt_v2_b5.pth',
    b2_li='checkpoints/pvt_v2_b2_li.pth',
)

# The backbone of every dense-prediction config: a Table 1 preset giving four pyramid levels,
# stochastic depth 0.1 and the official weights. `_delete_` drops the base model's ResNet
# keys; variants change `arch` and the checkpoint. Every Table 1 variant has the same stage
# widths, which the necks take.
pvt_backbone = dict(
    _delete_=True, type='PVT', arch='tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.1,
    init_cfg=dict(type='Pretrained', checkpoint=pvt_pretrained['tiny']))
pvt_stage_widths = [64, 128, 320, 512]

# PVT v2's: the same, from v2's presets (drop-path 0.1 in every official v2 detection and
# segmentation backbone, b0 to b5). b1-b5 and b2_li have v1's stage widths; b0 is narrower.
pvtv2_backbone = dict(
    _delete_=True, type='PVTv2', arch='b0', out_indices=(0, 1, 2, 3), drop_path_rate=0.1,
    init_cfg=dict(type='Pretrained', checkpoint=pvtv2_pretrained['b0']))
pvtv2_b0_stage_widths = [32, 64, 160, 256]
