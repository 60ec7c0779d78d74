# PVT v2-b5 on ImageNet-1k: 83.8 top-1, 82.0 M params (official PVT README). Drop-path 0.3 and
# gradient clipping 1.0, as b3.
_base_ = './pvtv2_b3_in1k.py'
model = dict(backbone=dict(arch='b5'))
