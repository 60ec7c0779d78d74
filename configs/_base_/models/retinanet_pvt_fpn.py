# RetinaNet (mmdet 3.3's) with a PVT backbone; variants change `arch` and the checkpoint.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', '../pvt.py']
model = dict(
    backbone={{_base_.pvt_backbone}},
    neck=dict(in_channels={{_base_.pvt_stage_widths}}),
    # The same focal loss, computed in fp32: mmcv's fp16 kernel returns NaN once a logit
    # passes about -17 (and has no bf16 kernel), which broke `--amp` training.
    bbox_head=dict(loss_cls=dict(type='FocalLossFP32')))
