# Mask R-CNN (mmdet 3.3's) with a PVT backbone; variants change `arch` and the checkpoint.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', '../pvt.py']
model = dict(backbone={{_base_.pvt_backbone}}, neck=dict(in_channels={{_base_.pvt_stage_widths}}))

# Batch invariance (docs/batch_invariance.md): each image's valid size reaches the backbone, and
# the neck and heads are masked to it, so an image's result does not depend on its batch.
# `custom_hooks = []` turns it off (a config setting its own custom_hooks must list it too).
custom_hooks = [dict(type='BatchInvariantHook')]
