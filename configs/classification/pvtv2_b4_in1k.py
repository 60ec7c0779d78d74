# PVT v2-b4 on ImageNet-1k: 83.6 top-1, 62.6 M params (official PVT README). Drop-path 0.3 and
# gradient clipping 1.0, as b3.
_base_ = './pvtv2_b3_in1k.py'
model = dict(backbone=dict(arch='b4'))
