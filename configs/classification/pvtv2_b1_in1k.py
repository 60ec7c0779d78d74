# PVT v2-b1 on ImageNet-1k: 78.7 top-1, 14.0 M params (official PVT README). Drop-path 0.1.
_base_ = './pvtv2_b0_in1k.py'
model = dict(backbone=dict(arch='b1'), head=dict(in_channels=512))
