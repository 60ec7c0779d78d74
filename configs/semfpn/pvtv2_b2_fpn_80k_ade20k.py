# Semantic FPN + PVT v2-b2, ADE20K: 45.2 mIoU (official PVTv2-Seg README).
_base_ = './pvtv2_b1_fpn_80k_ade20k.py'
model = dict(backbone=dict(arch='b2', init_cfg=dict(checkpoint={{_base_.pvtv2_pretrained.b2}})))
