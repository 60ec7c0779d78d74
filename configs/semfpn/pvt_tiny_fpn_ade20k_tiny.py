# Semantic FPN + PVT-Tiny from scratch on the embedded ADE20K-layout set
# (data/ade20k_tiny, made by tools/misc/make_ade20k_tiny.py), small enough for 2 CPU cores
# in minutes. Same model, dataset, transforms and metric as the ADE20K config at a quarter
# of the resolution (128x128 crops, shorter side 128 at test, sizes aligned to 32) with a
# short schedule: remove the overrides below and point data_root at
# data/ade/ADEChallengeData2016 for the real thing.
_base_ = './pvt_tiny_fpn_80k_ade20k.py'
data_root = 'data/ade20k_tiny/'
crop_size = (128, 128)

model = dict(data_preprocessor=dict(size=crop_size), backbone=dict(init_cfg=None))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=1, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=1, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

# A short schedule that learns from scratch: higher lr, warm-up, poly decay.
max_iters = 200
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=20, end=max_iters, by_epoch=False),
]
auto_scale_lr = dict(base_batch_size=4)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_iters, max_keep_ckpts=2))
