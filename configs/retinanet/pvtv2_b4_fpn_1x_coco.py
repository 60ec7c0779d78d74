# RetinaNet + PVT v2-b4, 1x: 46.1 AP (official PVT README). As the official config (and mmdet's
# `retinanet_pvtv2-b4_fpn_1x_coco.py`): 1 image per GPU, i.e. total batch 8 on 8 GPUs, with
# lr 1e-4 / 1.4 (the authors' choice, about 1e-4 / sqrt(2), not the linear rule's 1e-4 / 2).
# auto_scale_lr's base batch is that 8, so `--auto-scale-lr` rescales from it.
_base_ = './pvtv2_b1_fpn_1x_coco.py'
model = dict(backbone=dict(arch='b4', init_cfg=dict(checkpoint={{_base_.pvtv2_pretrained.b4}})))
optim_wrapper = dict(optimizer=dict(lr=1e-4 / 1.4))
train_dataloader = dict(batch_size=1, num_workers=1)
auto_scale_lr = dict(base_batch_size=8)
