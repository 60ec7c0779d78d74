# Semantic FPN + PVT v2-b1, ADE20K: 42.5 mIoU (official PVTv2-Seg README).
_base_ = './pvtv2_b0_fpn_80k_ade20k.py'
model = dict(backbone=dict(arch='b1', init_cfg=dict(checkpoint={{_base_.pvtv2_pretrained.b1}})),
             neck=dict(in_channels={{_base_.pvt_stage_widths}}))
