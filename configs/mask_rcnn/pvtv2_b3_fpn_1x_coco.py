# Mask R-CNN + PVT v2-b3, 1x: 47.0 box AP / 42.5 mask AP (official PVT README).
_base_ = './pvtv2_b1_fpn_1x_coco.py'
model = dict(backbone=dict(arch='b3', init_cfg=dict(checkpoint={{_base_.pvtv2_pretrained.b3}})))
