# Semantic FPN + PVT v2-b4, ADE20K: 47.9 mIoU (official PVTv2-Seg README).
_base_ = './pvtv2_b1_fpn_80k_ade20k.py'
model = dict(backbone=dict(arch='b4', init_cfg=dict(checkpoint={{_base_.pvtv2_pretrained.b4}})))
