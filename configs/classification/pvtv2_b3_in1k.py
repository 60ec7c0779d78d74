# PVT v2-b3 on ImageNet-1k: 83.1 top-1, 45.2 M params (official PVT README). The deeper models
# use drop-path 0.3 and clip gradients at norm 1.0, as the official `configs/pvt_v2/pvt_v2_b3.py`.
_base_ = './pvtv2_b1_in1k.py'
model = dict(backbone=dict(arch='b3', drop_path_rate=0.3))
optim_wrapper = dict(clip_grad=dict(max_norm=1.0))
