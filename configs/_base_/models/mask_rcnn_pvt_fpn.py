# Mask R-CNN (mmdet 3.3's) with a PVT backbone; variants change `arch` and the checkpoint.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', '../pvt.py']
model = dict(backbone={{_base_.pvt_backbone}}, neck=dict(in_channels={{_base_.pvt_stage_widths}}))
