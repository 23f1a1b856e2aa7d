# RAE stage-1 reference recipe on ImageNet 256 (global batch 512).
_base_ = [
    '../_base_/models/rae_dinov2-b-reg_vit-xl.py',
    '../_base_/datasets/imagenet_256.py',
    '../_base_/schedules/tokenizer_adamw_16e.py',
    '../_base_/default_runtime.py',
]
