# ImageNet-1k with DeiT's augmentation (mmpretrain 1.2's Swin/DeiT dataset config):
# RandomResizedCrop 224, flip, RandAugment (rand-m9-mstd0.5), random erasing 0.25, and DeiT's
# repeated-augmentation sampler (each image 3 times per epoch, on different GPUs), which the
# official `main.py` turns on by default (`--repeated-aug`). Evaluation: shorter side 256
# (the official `int(256 / 224 * 224)`), 224 centre crop. 128 images per GPU (8 GPUs: 1024).
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128, sampler=dict(type='RepeatAugSampler', shuffle=True))
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
