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
