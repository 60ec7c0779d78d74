# PVT-Small on ImageNet-1k: paper Table 2 (79.8 top-1, 24.5 M params, 3.8 GFLOPs).
_base_ = './pvt_tiny_in1k.py'
model = dict(backbone=dict(arch='small'))
