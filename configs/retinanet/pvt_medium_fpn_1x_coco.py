_base_ = './pvt_tiny_fpn_1x_coco.py'
model = dict(backbone=dict(arch='medium', init_cfg=dict(checkpoint={{_base_.pvt_pretrained.medium}})))
