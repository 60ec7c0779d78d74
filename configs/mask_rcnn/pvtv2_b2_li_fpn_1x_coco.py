# Mask R-CNN + PVT v2-b2-li (linear SRA), 1x: 44.1 box AP / 40.5 mask AP (official detection README).
_base_ = './pvtv2_b1_fpn_1x_coco.py'
model = dict(backbone=dict(arch='b2_li', init_cfg=dict(checkpoint={{_base_.pvtv2_pretrained.b2_li}})))
