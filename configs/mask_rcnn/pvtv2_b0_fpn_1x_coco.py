# Mask R-CNN + PVT v2-b0, 1x (12 epochs), 800 px: 38.2 box AP / 36.2 mask AP (official PVT README).
# Total batch 16 (8 GPUs x 2), drop-path 0.1, AdamW weight decay 1e-4 as v1, but lr 2e-4: every
# official v2 Mask R-CNN config (`mask_rcnn_pvt_v2_b*_fpn_1x_coco.py`, the runs behind the
# README's numbers) uses 2e-4, where the RetinaNet ones use 1e-4.
_base_ = './pvt_tiny_fpn_1x_coco.py'
model = dict(backbone={{_base_.pvtv2_backbone}}, neck=dict(in_channels={{_base_.pvtv2_b0_stage_widths}}))
optim_wrapper = dict(optimizer=dict(lr=2e-4))
