# The built-in default: the DecQ recipe with tiny, randomly initialised
# networks on the bundled demo photos at 64 px. Trains in minutes on 2 CPU
# cores, needs no download. Everything not overridden here is the full
# ImageNet recipe.
_base_ = ['../decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py']

image_size = 64
# DINOv2-B/14-with-registers layout (12 blocks, 4 registers), tiny width.
tiny_vfm = dict(embed_dim=96, depth=12, num_heads=4)

model = dict(
    tokenizer=dict(
        encoder=dict(pretrained=False, input_size=56, model_kwargs=tiny_vfm),
        decoder=dict(
            arch=dict(
                _delete_=True, width=128, depth=4, num_heads=4, mlp_dim=512),
            patch_size=16),
        condenser=dict(num_heads=4)),
    # AlexNet LPIPS: the VGG trunk dominates a CPU step at this size.
    perceptual_loss=dict(net='alex', pretrained_trunk=False),
    discriminator=dict(
        pretrained=False,
        input_size=64,
        block_indices=(1, 3),
        model_kwargs=dict(img_size=64, embed_dim=96, depth=4, num_heads=4)))

train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(
        _delete_=True,
        type='DemoImageDataset',
        mode='train',
        image_size=image_size,
        samples_per_epoch=256))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(
        _delete_=True,
        type='DemoImageDataset',
        mode='val',
        image_size=image_size))
test_dataloader = val_dataloader
# Metrics that need no download.
val_evaluator = [dict(type='PSNRMetric'), dict(type='SSIMMetric')]
test_evaluator = val_evaluator

train_cfg = dict(val_interval=4)
default_hooks = dict(
    logger=dict(interval=8), checkpoint=dict(interval=4, max_keep_ckpts=2))
model_wrapper_cfg = dict(find_unused_parameters=True)
# 512 iterations in all: a short EMA horizon, or the average would still hold
# a third of the initial weights at the end (0.9978 ** 512 = 0.32).
custom_hooks = [
    dict(type='EMAHook', ema_type='TrainableExponentialMovingAverage',
         momentum=0.02, update_buffers=False, priority='ABOVE_NORMAL'),
    dict(type='ReconstructionGridHook', interval=128, num_images=8),
]
