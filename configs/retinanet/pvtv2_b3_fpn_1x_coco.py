# RetinaNet + PVT v2-b3, 1x: 45.9 AP (official PVT README).
_base_ = './pvtv2_b1_fpn_1x_coco.py'
model = dict(backbone=dict(arch='b3', init_cfg=dict(checkpoint={{_base_.pvtv2_pretrained.b3}})))
