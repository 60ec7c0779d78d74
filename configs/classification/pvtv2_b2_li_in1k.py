# PVT v2-b2-li (linear SRA) on ImageNet-1k: 82.1 top-1, 22.6 M params (official PVT README).
# Drop-path 0.1.
_base_ = './pvtv2_b1_in1k.py'
model = dict(backbone=dict(arch='b2_li'))
