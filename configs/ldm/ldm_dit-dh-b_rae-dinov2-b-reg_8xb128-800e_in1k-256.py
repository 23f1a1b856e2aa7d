# DiT-DH-B on RAE latents, 800 epochs.
_base_ = ['./ldm_dit-dh-xl_rae-dinov2-b-reg_8xb128-800e_in1k-256.py']

model = dict(denoiser=dict(arch='B'))
