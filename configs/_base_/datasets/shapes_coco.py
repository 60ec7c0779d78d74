# The embedded shapes set (tools/misc/make_shapes_coco.py): 320x256 images in real COCO
# layout (80 COCO categories, the shapes filed under three of them), so mmdet's CocoDataset
# and CocoMetric run unchanged. Boxes only; instance configs add masks to the pipelines.
# The datasets keep the three classes the set uses, so heads predict 3 classes, not 80
# (an 80-class RetinaNet head costs ~40% more per training step here, for nothing). For
# COCO: point data_root at data/coco/, drop `metainfo` and set the heads back to 80 classes.
dataset_type = 'CocoDataset'
shapes_classes = ('sports ball', 'kite', 'tv')  # circle, triangle, rectangle
metainfo = dict(classes=shapes_classes)
data_root = 'data/shapes_coco/'
backend_args = None
img_scale = (256, 192)  # the 320x256 images at 3/4 size: ~1.6x faster than full size

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric='bbox',
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator
