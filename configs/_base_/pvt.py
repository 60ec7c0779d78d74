# Shared by every pvt_mm config: make `type='PVT'` buildable, and say where the official
# ImageNet-1k weights live. This is the one place to change those paths.
custom_imports = dict(imports=['pvt_mm'], allow_failed_imports=False)

# Download the official PVT v1 weights, e.g.
#   mkdir -p checkpoints && wget -P checkpoints \
#     https://github.com/whai362/PVT/releases/download/v2/pvt_small.pth
# or set `model.backbone.init_cfg=None` to train from scratch.
pvt_pretrained = dict(
    tiny='checkpoints/pvt_tiny.pth',
    small='checkpoints/pvt_small.pth',
    medium='checkpoints/pvt_medium.pth',
    large='checkpoints/pvt_large.pth',
)

# The backbone of every dense-prediction config: a Table 1 preset giving four pyramid levels,
# stochastic depth 0.1 and the official weights. `_delete_` drops the base model's ResNet
# keys; variants change `arch` and the checkpoint. Every Table 1 variant has the same stage
# widths, which the necks take.
pvt_backbone = dict(
    _delete_=True, type='PVT', arch='tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.1,
    init_cfg=dict(type='Pretrained', checkpoint=pvt_pretrained['tiny']))
pvt_stage_widths = [64, 128, 320, 512]
