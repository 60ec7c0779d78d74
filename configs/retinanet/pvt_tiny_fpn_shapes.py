# RetinaNet + PVT-Tiny (v1) from scratch on the embedded shapes set, sized for minutes on
# 2 CPU cores (the main job, tools/quickstart.sh, uses PVT v2-b0: pvtv2_b0_fpn_shapes.py).
# What differs from the COCO recipe, and why (measurements in README.md's main-job section):
_base_ = [
    '../_base_/models/retinanet_pvt_fpn.py',
    '../_base_/datasets/shapes_coco.py',
    '../_base_/schedules/shapes_short.py',
]
model = dict(
    # From scratch (no downloads), and no stochastic depth in a run this short.
    backbone=dict(init_cfg=None, drop_path_rate=0.0),
    # A lighter FPN + head (128 channels, 2 convs instead of 256 and 4): the full head costs
    # more than the backbone at this size. GroupNorm keeps the from-scratch head's logits in
    # range (without it the classification loss exploded after ~20 steps at lr >= 3e-4);
    # masked (MaskedGN) for batch invariance, nn.GroupNorm bit for bit when nothing is padded.
    neck=dict(out_channels=128),
    bbox_head=dict(num_classes=3, in_channels=128, feat_channels=128, stacked_convs=2,
                   norm_cfg=dict(type='MaskedGN', num_groups=32, requires_grad=True)))
