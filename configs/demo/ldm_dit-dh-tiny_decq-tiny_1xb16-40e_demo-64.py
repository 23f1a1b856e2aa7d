# Stage 2 of the built-in default: a tiny DiT-DH on the latents of the tiny
# DecQ tokenizer (configs/demo/decq_tiny_1xb8-16e_demo-64.py), 8 classes
# (the bundled photos). tools/demo.sh sets the three paths below from its
# stage-1 run. Everything not overridden is the full ImageNet recipe.
_base_ = [
    '../ldm/ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_8xb128-80e_in1k-256.py'
]

tiny_vfm = dict(embed_dim=96, depth=12, num_heads=4)
model = dict(
    tokenizer=dict(
        encoder=dict(input_size=56, model_kwargs=tiny_vfm),
        decoder=dict(
            arch=dict(
                _delete_=True, width=128, depth=4, num_heads=4, mlp_dim=512)),
        condenser=dict(num_heads=4),
        latent_stats=None),  # set by tools/demo.sh
    tokenizer_ckpt=None,  # set by tools/demo.sh
    denoiser=dict(
        arch=dict(
            _delete_=True,
            body_width=192,
            body_depth=4,
            body_heads=4,
            head_width=384,
            head_depth=2,
            head_heads=4)),
    num_classes=8,
    sampler=dict(num_points=25))

train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(data_root='work_dirs/demo/latents'))  # set by tools/demo.sh
# Generation is evaluated by tools/sample.py in the demo script.
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(num_classes=8, num_per_class=4))
test_evaluator = dict(
    _delete_=True,
    type='GenerationMetric',
    metric_names=('is', ),
    feature_extractor=dict(type='RandomConvFeatureExtractor', num_classes=8))

max_epochs = 40
param_scheduler = [
    dict(type='ConstantLR', factor=1.0, by_epoch=True, begin=0,
         end=max_epochs // 2, convert_to_iter_based=True),
    dict(type='LinearLR', start_factor=1.0, end_factor=0.1, by_epoch=True,
         begin=max_epochs // 2, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
custom_hooks = [
    dict(type='EMAHook', ema_type='TrainableExponentialMovingAverage',
         momentum=1 - 0.99, update_buffers=False, priority='ABOVE_NORMAL'),
    dict(type='SampleGridHook', interval=100, num_samples=16, nrow=8,
         seed=0),
]
default_hooks = dict(
    logger=dict(interval=10), checkpoint=dict(interval=10, max_keep_ckpts=2))
