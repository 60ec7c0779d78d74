# ImageNet classifier (mmpretrain 1.2's ImageClassifier): PVT in class-token mode (the last
# output is the normalised class token, (B, 512)) + a linear 1000-way head, trained with
# label smoothing 0.1 and Mixup 0.8 / CutMix 1.0 as DeiT (paper section 5.1).
_base_ = ['../pvt.py']
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='PVT',
        arch='tiny',
        with_cls_token=True,
        out_indices=(3, ),
        drop_path_rate=0.1,
        init_cfg=None),  # trained from scratch on ImageNet
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))
