# Mask R-CNN (mmdet 3.3's) with a PVT backbone; variants change `arch` and the checkpoint.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', '../pvt.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='PVT',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint={{_base_.pvt_pretrained.tiny}})),
    neck=dict(in_channels=[64, 128, 320, 512]))
