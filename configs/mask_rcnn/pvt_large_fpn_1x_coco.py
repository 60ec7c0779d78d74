# Mask R-CNN + PVT-Large, 1x. As the official `mask_rcnn_pvt_l_fpn_1x_coco.py`: 1 image per GPU,
# i.e. total batch 8 on 8 GPUs, with lr 2e-4 / 1.4 (the authors' choice, not the linear rule's
# 2e-4 / 2); `--auto-scale-lr` rescales from batch 8. No stochastic depth, as the official
# `pvt_large` detection backbone.
_base_ = './pvt_tiny_fpn_1x_coco.py'
model = dict(backbone=dict(arch='large', drop_path_rate=0.0,
                           init_cfg=dict(checkpoint={{_base_.pvt_pretrained.large}})))
optim_wrapper = dict(optimizer=dict(lr=2e-4 / 1.4))
train_dataloader = dict(batch_size=1, num_workers=1)
auto_scale_lr = dict(base_batch_size=8)
