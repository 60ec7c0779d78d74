# RetinaNet + PVT v2-b0, 1x (12 epochs), 800 px: 37.2 AP (official PVT README). The v1 recipe
# (AdamW lr 1e-4, weight decay 1e-4, total batch 16 = 8 GPUs x 2, drop-path 0.1), as the
# official `retinanet_pvt_v2_b0_fpn_1x_coco.py`; only the backbone and the neck's widths differ.
_base_ = './pvt_tiny_fpn_1x_coco.py'
model = dict(backbone={{_base_.pvtv2_backbone}}, neck=dict(in_channels={{_base_.pvtv2_b0_stage_widths}}))
