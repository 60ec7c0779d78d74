# ADE20K (mmseg 1.2's dataset config): random resize (ratio 0.5-2.0) + 512x512 crop for
# training; at test the shorter side is 512 and both sides are aligned to multiples of 32
# (the official PVT `AlignedResize`, mmseg's `ResizeToMultiple`). 4 images per GPU: the
# paper's batch 16 is 4 GPUs x 4.
_base_ = 'mmseg::_base_/datasets/ade20k.py'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=4)
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
