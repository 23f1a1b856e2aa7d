# Stage-1 schedule of RAE: 16 epochs, AdamW lr 2e-4 betas (0.9, 0.95), no
# weight decay, 1 warm-up epoch then cosine to 2e-5; one optimizer for the
# tokenizer's trainable parts and one for the discriminator heads. EMA 0.9978
# of the trainable parts only.
lr = 2e-4
max_epochs = 16

# bf16 autocast on GPUs (no loss scaling); CPU runs are float32. The
# launcher (tools/train.py) turns this into the optim wrappers' settings;
# --precision / --amp override it.
precision = 'bf16'

# fused=True: one AdamW kernel per step instead of one per tensor group.
_adamw = dict(type='AdamW', lr=lr, betas=(0.9, 0.95), weight_decay=0.0,
              fused=True)
optim_wrapper = dict(
    constructor='SubmoduleOptimWrapperConstructor',
    tokenizer=dict(type='OptimWrapper', optimizer=_adamw),
    discriminator=dict(type='OptimWrapper', optimizer=_adamw))

# --cfg-options train_cfg.max_epochs=N moves the ends below to N (and N // 2)
# (decq_plugin/utils/schedule.py).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 1, eta_min=2e-5,
         by_epoch=True, begin=1, end=max_epochs, convert_to_iter_based=True),
]

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# mmengine's EMA: averaged = (1 - momentum) * averaged + momentum * source,
# so decay 0.9978 is momentum 0.0022.
# A fixed original | reconstruction grid (EMA weights) every 5000 iterations:
# work_dir/reconstructions/iter_*.png and the visualizer's backends.
custom_hooks = [
    dict(type='EMAHook', ema_type='TrainableExponentialMovingAverage',
         momentum=1 - 0.9978, update_buffers=False, priority='ABOVE_NORMAL'),
    dict(type='ReconstructionGridHook', interval=5000, num_images=8),
]

# Tokenizer and discriminator are wrapped separately so each optimizer step
# synchronises its own gradients.
model_wrapper_cfg = dict(
    type='MMSeparateDistributedDataParallel', broadcast_buffers=False,
    find_unused_parameters=False)

# Reference global batch: 512 (e.g. 8 GPUs x 64).
auto_scale_lr = dict(base_batch_size=512, enable=False)
