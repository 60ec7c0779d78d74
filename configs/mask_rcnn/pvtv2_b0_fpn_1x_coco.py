# Mask R-CNN + PVT v2-b0, 1x (12 epochs), 800 px: 38.2 box AP / 36.2 mask AP (official PVT README).
# v1's Mask R-CNN recipe (total batch 16 = 8 GPUs x 2, drop-path 0.1, AdamW lr 2e-4, weight
# decay 1e-4), as the official `mask_rcnn_pvt_v2_b0_fpn_1x_coco.py`; only the backbone and the
# neck's widths differ.
_base_ = './pvt_tiny_fpn_1x_coco.py'
model = dict(backbone={{_base_.pvtv2_backbone}}, neck=dict(in_channels={{_base_.pvtv2_b0_stage_widths}}))
