# RetinaNet + PVT-Tiny, 1x (12 epochs), 800 px: paper Table 3 (36.7 AP, 23.0 M params).
_base_ = [
    '../_base_/models/retinanet_pvt_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    '../_base_/schedules/adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]
