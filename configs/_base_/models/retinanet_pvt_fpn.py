# RetinaNet (mmdet 3.3's) with a PVT backbone; variants change `arch` and the checkpoint.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', '../pvt.py']
model = dict(
    backbone={{_base_.pvt_backbone}},
    neck=dict(in_channels={{_base_.pvt_stage_widths}}),
    # The same focal loss, computed in fp32: mmcv's fp16 kernel returns NaN once a logit
    # passes about -17 (and has no bf16 kernel), which broke `--amp` training.
    bbox_head=dict(loss_cls=dict(type='FocalLossFP32')))

# Batch invariance (docs/batch_invariance.md): each image's valid size reaches the backbone, and
# the neck and heads are masked to it, so an image's result does not depend on its batch.
# `custom_hooks = []` turns it off (a config setting its own custom_hooks must list it too).
custom_hooks = [dict(type='BatchInvariantHook')]
