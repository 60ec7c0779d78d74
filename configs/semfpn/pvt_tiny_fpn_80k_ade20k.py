# Semantic FPN + PVT-Tiny, ADE20K, 512x512 crops, 80k iterations, batch 16 (4 GPUs x 4):
# paper Table 5 (35.7 mIoU, 17.0 M params, 33.2 GFLOPs).
_base_ = [
    '../_base_/models/fpn_pvt.py',
    '../_base_/datasets/ade20k_semfpn.py',
    '../_base_/schedules/adamw_poly_80k.py',
    'mmseg::_base_/default_runtime.py',
]
