# The 80-epoch stage-2 schedule stretched to 800 epochs.
_base_ = ['./ldm_adamw_80e.py']

max_epochs = 800
param_scheduler = [
    dict(type='ConstantLR', factor=1.0, by_epoch=True, begin=0,
         end=max_epochs // 2, convert_to_iter_based=True),
    dict(type='LinearLR', start_factor=1.0, end_factor=0.1, by_epoch=True,
         begin=max_epochs // 2, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
