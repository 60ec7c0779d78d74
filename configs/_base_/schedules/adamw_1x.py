# Paper section 5.1: AdamW, lr 1e-4, weight decay 1e-4, 12 epochs, total batch 16.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
