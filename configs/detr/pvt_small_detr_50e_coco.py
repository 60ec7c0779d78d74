# DETR on PVT-Small's last stage, 50 epochs (paper Table 6: 34.7 AP). mmdet's DETR recipe
# already has backbone lr x0.1 and gradient clipping 0.1; the lr drops /10 at epoch 33.
_base_ = ['mmdet::detr/detr_r50_8xb2-150e_coco.py', '../_base_/pvt.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='PVT',
        arch='small',
        out_indices=(3, ),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint={{_base_.pvt_pretrained.small}})),
    neck=dict(in_channels=[512]))
max_epochs = 50
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[33], gamma=0.1)
]
