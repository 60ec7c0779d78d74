# DeiT's schedule (paper section 5.1): AdamW, lr 5e-4 x total_batch / 512 (1e-3 for the total
# batch 1024 = 8 GPUs x 128), weight decay 0.05 (none on norms, biases, position embeddings
# and the class token), 5 warm-up epochs from 1e-6, cosine to 1e-5, 300 epochs.
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=5e-4 * 1024 / 512, weight_decay=0.05, eps=1e-8,
                   betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={'.pos_embed': dict(decay_mult=0.0), '.cls_token': dict(decay_mult=0.0)}))
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
