# DiT-DH-XL on the 512 px latents of
# rae_dinov2-b-reg_vit-xl_8xb64-16e_in1k-512.py
# (VFM at 448 px: 32x32x768 patch latents, 1024 tokens). The DiT's grid and
# position tables follow the tokenizer; the time shift follows the latent
# size: a = sqrt(32 * 32 * 768 / 4096) = 13.86 (6.93 at 256 px), for training
# and sampling alike. Global batch 1024 as at 256 px, as 32 GPUs x 32 (four
# times the tokens per image). Costs: configs/README.md, "512 px".
_base_ = ['./ldm_dit-dh-xl_rae-dinov2-b-reg_8xb128-80e_in1k-256.py']

model = dict(tokenizer=dict(encoder=dict(input_size=448)))

latent_root = 'data/latents/imagenet512'  # required: extract_latents output
train_dataloader = dict(batch_size=32, dataset=dict(data_root=latent_root))
val_evaluator = dict(reference='data/VIRTUAL_imagenet512.npz')
test_evaluator = val_evaluator
