# Mask R-CNN + PVT v2-b5, 1x: 47.4 box AP / 42.5 mask AP (official PVT README). Batch 8 (8 GPUs
# x 1) and lr 2e-4 / 1.4, as b4.
_base_ = './pvtv2_b4_fpn_1x_coco.py'
model = dict(backbone=dict(arch='b5', init_cfg=dict(checkpoint={{_base_.pvtv2_pretrained.b5}})))
