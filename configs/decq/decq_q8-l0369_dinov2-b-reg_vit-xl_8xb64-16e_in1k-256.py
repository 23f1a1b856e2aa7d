# DecQ defaults on ImageNet 256: 8 queries, condensers on blocks 0, 3, 6, 9.
_base_ = [
    '../_base_/models/decq_dinov2-b-reg_vit-xl.py',
    '../_base_/datasets/imagenet_256.py',
    '../_base_/schedules/tokenizer_adamw_16e.py',
    '../_base_/default_runtime.py',
]
