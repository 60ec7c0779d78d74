# Semantic FPN + PVT-Large: paper Table 5 (42.1 mIoU, 65.1 M params, 79.6 GFLOPs).
_base_ = './pvt_tiny_fpn_80k_ade20k.py'
model = dict(backbone=dict(arch='large', init_cfg=dict(checkpoint={{_base_.pvt_pretrained.large}})))
