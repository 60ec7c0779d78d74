# Using pvt_mm from another project's config: mmdet 3.3's own, UNMODIFIED Faster R-CNN
# config (read from the installed mmdet through the `mmdet::` prefix), with its ResNet-50
# swapped for PVT-Small. This file needs nothing from pvt_mm's configs/ -- copy it into any
# project that has mmdet and pvt_mm installed:
#
#   python tools/train.py configs/examples/faster_rcnn_pvt_small_fpn_1x_coco.py
#   # or mmdet's own tools/train.py / DetInferencer with this config
#
# Three things make the swap work:
#   1. custom_imports registers `type='PVT'` in mmdet's MODELS registry;
#   2. `_delete_=True` drops every ResNet key (depth, num_stages, norm_cfg, style, ...)
#      instead of merging PVT's keys into them;
#   3. the FPN neck takes PVT's stage widths, 64/128/320/512 (ResNet-50: 256/512/1024/2048).
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['pvt_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='PVT',
        arch='small',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        # Official ImageNet-1k weights: https://github.com/whai362/PVT/releases/download/v2/
        # pvt_small.pth; set init_cfg=None to train from scratch.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/pvt_small.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))

# The paper's detection recipe (section 5.1): AdamW, lr 1e-4, weight decay 1e-4.
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, weight_decay=0.0001))
