# Mask R-CNN + PVT v2-b4, 1x: 47.5 box AP / 42.7 mask AP (official PVT README). As the official
# config: 1 image per GPU, i.e. total batch 8 on 8 GPUs, with lr 2e-4 / 1.4 (the authors' choice,
# about 2e-4 / sqrt(2), not the linear rule's 2e-4 / 2); `--auto-scale-lr` rescales from batch 8.
_base_ = './pvtv2_b1_fpn_1x_coco.py'
model = dict(backbone=dict(arch='b4', init_cfg=dict(checkpoint={{_base_.pvtv2_pretrained.b4}})))
optim_wrapper = dict(optimizer=dict(lr=2e-4 / 1.4))
train_dataloader = dict(batch_size=1, num_workers=1)
auto_scale_lr = dict(base_batch_size=8)
