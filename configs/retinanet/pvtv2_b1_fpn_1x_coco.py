# RetinaNet + PVT v2-b1, 1x: 41.2 AP (official PVT README).
_base_ = './pvtv2_b0_fpn_1x_coco.py'
model = dict(backbone=dict(arch='b1', init_cfg=dict(checkpoint={{_base_.pvtv2_pretrained.b1}})),
             neck=dict(in_channels={{_base_.pvt_stage_widths}}))
