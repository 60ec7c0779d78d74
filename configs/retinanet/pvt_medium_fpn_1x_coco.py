# No stochastic depth: the official detection backbone (`detection/pvt.py`, class
# `pvt_medium`) leaves drop-path at 0; only tiny / small set 0.1.
_base_ = './pvt_tiny_fpn_1x_coco.py'
model = dict(backbone=dict(arch='medium', drop_path_rate=0.0,
                           init_cfg=dict(checkpoint={{_base_.pvt_pretrained.medium}})))
