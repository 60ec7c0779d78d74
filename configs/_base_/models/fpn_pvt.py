# Semantic FPN (mmseg 1.2's EncoderDecoder + FPN + FPNHead) with a PVT backbone, as in the
# official PVT release: FPN 256 channels / 4 levels, FPNHead 128 channels, dropout 0.1.
# Variants change `arch` and the checkpoint.
_base_ = ['mmseg::_base_/models/fpn_r50.py', '../pvt.py']
model = dict(
    pretrained=None,  # weights come through the backbone's init_cfg
    # The training crop size; PaddedSegDataPreProcessor (pvt_mm) is mmseg's SegDataPreProcessor
    # padding a test batch of mixed sizes instead of refusing it (docs/batch_invariance.md).
    data_preprocessor=dict(type='PaddedSegDataPreProcessor', size=(512, 512)),
    backbone={{_base_.pvt_backbone}},
    neck=dict(in_channels={{_base_.pvt_stage_widths}}, out_channels=256, num_outs=4),
    decode_head=dict(
        in_channels=[256, 256, 256, 256],
        channels=128,
        feature_strides=[4, 8, 16, 32],
        num_classes=150,
        dropout_ratio=0.1,
        align_corners=False))

# Batch invariance (docs/batch_invariance.md): each image's valid size reaches the backbone, and
# the neck and heads are masked to it, so an image's result does not depend on its batch.
# `custom_hooks = []` turns it off (a config setting its own custom_hooks must list it too).
custom_hooks = [dict(type='BatchInvariantHook')]
