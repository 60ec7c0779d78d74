# Paper section 5.3: AdamW lr 1e-4 (weight decay 1e-4 as the official PVT release), poly
# decay with power 0.9 to 0, 80k iterations (total batch 16); validate and save every 8k.
_base_ = 'mmseg::_base_/schedules/schedule_80k.py'
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=80000, by_epoch=False),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
