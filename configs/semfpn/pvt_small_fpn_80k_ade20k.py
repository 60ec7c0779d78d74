# Semantic FPN + PVT-Small: paper Table 5 (39.8 mIoU, 28.2 M params, 44.5 GFLOPs).
_base_ = './pvt_tiny_fpn_80k_ade20k.py'
model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint={{_base_.pvt_pretrained.small}})))
