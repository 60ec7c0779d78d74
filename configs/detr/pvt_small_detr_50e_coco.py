# DETR on PVT-Small's last stage, 50 epochs (paper Table 6: 34.7 AP). mmdet's DETR recipe
# already has AdamW lr 1e-4, weight decay 1e-4, backbone lr x0.1, gradient clipping 0.1 and
# total batch 16; the lr drops /10 at epoch 33. The augmentation is the official
# `detr_pvt_s_8x2_50ep_coco.py`'s, not mmdet's DETR one (480-800 or resize + crop + resize):
# shorter side one of 640, 672, ..., 800 (longer side <= 1333) and a flip, test at 800, both
# padded to multiples of 32.
_base_ = ['mmdet::detr/detr_r50_8xb2-150e_coco.py', '../_base_/pvt.py']
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='PVT',
        arch='small',
        out_indices=(3, ),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint={{_base_.pvt_pretrained.small}})),
    neck=dict(in_channels=[512]))
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize', scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736),
                                              (1333, 768), (1333, 800)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
max_epochs = 50
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[33], gamma=0.1)
]
