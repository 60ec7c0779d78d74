# RetinaNet (mmdet 3.3's) with a PVT backbone; variants change `arch` and the checkpoint.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', '../pvt.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='PVT',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint={{_base_.pvt_pretrained.tiny}})),
    # Every Table 1 variant has the same stage widths.
    neck=dict(in_channels=[64, 128, 320, 512]),
    # The same focal loss, computed in fp32: mmcv's fp16 kernel returns NaN once a logit
    # passes about -17 (and has no bf16 kernel), which broke `--amp` training.
    bbox_head=dict(loss_cls=dict(type='FocalLossFP32')))
