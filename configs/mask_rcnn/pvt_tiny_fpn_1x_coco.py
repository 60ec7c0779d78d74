# Mask R-CNN + PVT-Tiny, 1x, 800 px: paper Table 4 (36.7 box AP / 35.1 mask AP, 32.9 M).
_base_ = [
    '../_base_/models/mask_rcnn_pvt_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]
