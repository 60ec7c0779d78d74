# PVT-Medium on ImageNet-1k: paper Table 2 (81.2 top-1, 44.2 M params, 6.7 GFLOPs).
# The deeper models use stochastic depth 0.3 and clip gradients at norm 1.0, as the official
# `classification/configs/pvt/pvt_medium.py`.
_base_ = './pvt_tiny_in1k.py'
model = dict(backbone=dict(arch='medium', drop_path_rate=0.3))
optim_wrapper = dict(clip_grad=dict(max_norm=1.0))
