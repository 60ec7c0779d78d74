# DeiT's schedule as the official PVT `classification/main.py` runs it: AdamW, lr 5e-4 x
# total_batch / 512 (1e-3 for the total batch 1024 = 8 GPUs x 128), weight decay 0.05 (none on
# norms, biases and the class token: timm skips 1-D parameters and the model's
# `no_weight_decay()`, which is only `cls_token` in v1, so v1's position embeddings are decayed),
# 5 warm-up epochs from 1e-6, cosine to 1e-5, 300 epochs, mixed precision (timm's NativeScaler;
# here mmengine's AmpOptimWrapper, fp16 with a dynamic loss scale: a CUDA GPU is needed; set
# `optim_wrapper.type=OptimWrapper` for fp32).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4 * 1024 / 512, weight_decay=0.05, eps=1e-8,
                   betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={'.cls_token': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5, end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# --auto-scale-lr rescales lr to the actual total batch (lr 5e-4 per 512 images).
auto_scale_lr = dict(base_batch_size=1024)
