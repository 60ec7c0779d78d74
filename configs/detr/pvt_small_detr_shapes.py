# DETR + PVT-Small from scratch on the embedded shapes set: a smoke-scale run (DETR needs
# far longer than this to converge), with DETR's own optimiser settings and multi-scale input.
_base_ = [
    '../_base_/models/detr_pvt.py',
    '../_base_/datasets/shapes_coco.py',
    '../_base_/schedules/shapes_short.py',
]
model = dict(backbone=dict(init_cfg=None), bbox_head=dict(num_classes=3))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoiceResize', scales=[(224, 160), (256, 192)], keep_ratio=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# DETR's optimiser: lr 1e-4 with the backbone at x0.1, clipping 0.1 (the schedule is the
# base's warm-up + cosine).
optim_wrapper = dict(
    optimizer=dict(lr=1e-4),
    clip_grad=dict(max_norm=0.1),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1, decay_mult=1.0)}))
