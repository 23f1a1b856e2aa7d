# Stage-2 schedule: AdamW lr 2e-4 betas (0.9, 0.95) no weight decay, grad
# clip 1.0, constant lr then linear decay to 2e-5 over the second half;
# global batch 1024 (8 GPUs x 128); EMA 0.9995 of the denoiser only (the
# tokenizer is frozen).
max_epochs = 80

# bf16 autocast on GPUs (no loss scaling); CPU runs are float32. The
# launcher (tools/train.py) turns this into the optim wrapper's settings;
# --precision / --amp override it.
precision = 'bf16'

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.95),
                   weight_decay=0.0, fused=True),  # one kernel per step
    clip_grad=dict(max_norm=1.0))

# --cfg-options train_cfg.max_epochs=N moves the ends below to N (and N // 2)
# (decq_plugin/utils/schedule.py).
param_scheduler = [
    dict(type='ConstantLR', factor=1.0, by_epoch=True, begin=0,
         end=max_epochs // 2, convert_to_iter_based=True),
    dict(type='LinearLR', start_factor=1.0, end_factor=0.1, by_epoch=True,
         begin=max_epochs // 2, end=max_epochs, convert_to_iter_based=True),
]

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# mmengine momentum = 1 - decay.
custom_hooks = [
    dict(type='EMAHook', ema_type='TrainableExponentialMovingAverage',
         momentum=1 - 0.9995, update_buffers=False, priority='ABOVE_NORMAL'),
    dict(type='SampleGridHook', interval=5000, num_samples=16, seed=0),
]

auto_scale_lr = dict(base_batch_size=1024, enable=False)
