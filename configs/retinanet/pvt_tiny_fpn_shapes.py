# The main job: RetinaNet + PVT-Tiny trained from scratch on the embedded shapes set
# (data/shapes_coco, real COCO layout, made by tools/misc/make_shapes_coco.py), small
# enough for 2 CPU cores in minutes. Same model and dataset types as the COCO config:
# remove the overrides below and point data_root at data/coco/ for the real thing.
_base_ = './pvt_tiny_fpn_1x_coco.py'
data_root = 'data/shapes_coco/'
scale = (256, 192)  # the 320x256 images at 3/4 size: ~2.4 s per batch of 4 on 2 cores

# From scratch (no downloads needed). Without ImageNet weights the un-normalised head
# collapses (classification loss explodes after ~20 iterations at lr >= 3e-4, measured);
# GroupNorm in the head keeps its logits in range.
model = dict(
    backbone=dict(init_cfg=None),
    bbox_head=dict(norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=1,
    dataset=dict(data_root=data_root, pipeline=train_pipeline, filter_cfg=dict(min_size=8)))
val_dataloader = dict(
    batch_size=4, num_workers=1, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# A short schedule that learns from scratch: higher lr, warm-up, cosine, clipping.
max_epochs = 7
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=5e-4), clip_grad=dict(max_norm=5, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min=1e-5),
]
auto_scale_lr = dict(base_batch_size=4)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=2))
