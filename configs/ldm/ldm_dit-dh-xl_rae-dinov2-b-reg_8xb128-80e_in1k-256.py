# DiT-DH-XL on RAE latents, 80 epochs, ImageNet 256, global batch 1024.
_base_ = [
    '../_base_/models/ldm_rae_dit-dh-xl.py',
    '../_base_/datasets/imagenet_256_latents.py',
    '../_base_/schedules/ldm_adamw_80e.py',
    '../_base_/default_runtime.py',
]
