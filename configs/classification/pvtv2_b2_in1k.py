# PVT v2-b2 on ImageNet-1k: 82.0 top-1, 25.4 M params (official PVT README). Drop-path 0.1.
_base_ = './pvtv2_b1_in1k.py'
model = dict(backbone=dict(arch='b2'))
