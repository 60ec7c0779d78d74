_base_ = './pvt_tiny_fpn_3x_mstrain_coco.py'
model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint={{_base_.pvt_pretrained.small}})))
