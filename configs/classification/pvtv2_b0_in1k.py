# PVT v2-b0 on ImageNet-1k: 70.5 top-1, 3.7 M params (official PVT README). The v1 recipe (DeiT,
# 300 epochs, total batch 1024 = 8 GPUs x 128, from scratch) and v2's classifier, as the official
# `pvt_v2.py`: no class token; the last stage's normalised tokens are averaged (the backbone's
# stage-4 map through GlobalAveragePooling = the official `x.mean(dim=1)` after `norm4`) into a
# linear head. Drop-path 0.1, as the official `configs/pvt_v2/pvt_v2_b0.py`.
_base_ = './pvt_tiny_in1k.py'
model = dict(
    backbone=dict(_delete_=True, type='PVTv2', arch='b0', out_indices=(3, ), drop_path_rate=0.1,
                  init_cfg=None),
    neck=dict(_delete_=True, type='GlobalAveragePooling'),
    head=dict(in_channels=256))
