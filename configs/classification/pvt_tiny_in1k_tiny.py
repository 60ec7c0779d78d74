# PVT-Tiny from scratch on the embedded ImageNet-layout set (data/imagenet_tiny, made by
# tools/misc/make_imagenet_tiny.py: 4 of the 1000 classes), small enough for 2 CPU cores in
# minutes. Same model, dataset, augmentations (RandAugment, random erasing, Mixup, CutMix,
# label smoothing) and metric as the ImageNet config, at 64x64 instead of 224x224 (test:
# shorter side 72, centre crop 64), with a short schedule. Remove the overrides below and
# point data_root at data/imagenet for the real thing.
_base_ = './pvt_tiny_in1k.py'
data_root = 'data/imagenet_tiny/'
bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color=bgr_mean, fill_std=bgr_std),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=72, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs'),
]
# Plain shuffling instead of the repeated-augmentation sampler (on one process it shows
# only a third of these few images per epoch, each three times), and fp32: this runs on CPUs.
train_dataloader = dict(
    batch_size=16, num_workers=1, sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
optim_wrapper = dict(type='OptimWrapper')
val_dataloader = dict(
    batch_size=16, num_workers=1, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(topk=(1, ))  # 4 classes: top-5 says nothing
test_evaluator = val_evaluator

# A short schedule: 1 warm-up epoch, cosine to the end.
max_epochs = 20
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, end=max_epochs),
]
auto_scale_lr = dict(base_batch_size=16)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=2))
