# RetinaNet + PVT v2-b2, 1x: 44.6 AP (official PVT README).
_base_ = './pvtv2_b1_fpn_1x_coco.py'
model = dict(backbone=dict(arch='b2', init_cfg=dict(checkpoint={{_base_.pvtv2_pretrained.b2}})))
