# Semantic FPN + PVT-Medium: paper Table 5 (41.6 mIoU, 48.0 M params, 61.0 GFLOPs).
_base_ = './pvt_tiny_fpn_80k_ade20k.py'
model = dict(backbone=dict(arch='medium', init_cfg=dict(checkpoint={{_base_.pvt_pretrained.medium}})))
