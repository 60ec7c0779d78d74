# PVT-Tiny on ImageNet-1k, DeiT recipe, 300 epochs, total batch 1024 (8 GPUs x 128):
# paper Table 2 (75.1 top-1, 13.2 M params, 1.9 GFLOPs).
_base_ = [
    '../_base_/models/pvt_cls.py',
    '../_base_/datasets/imagenet_pvt_224.py',
    '../_base_/schedules/adamw_cosine_300e.py',
    'mmpretrain::_base_/default_runtime.py',
]
