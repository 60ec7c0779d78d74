# ImageNet-1k with DeiT's augmentation (mmpretrain 1.2's Swin/DeiT dataset config):
# RandomResizedCrop 224, flip, RandAugment (rand-m9-mstd0.5), random erasing 0.25.
# Evaluation: shorter side 248, 224 centre crop. 128 images per GPU (8 GPUs: total 1024).
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=248, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
