# DiT-DH-S on DECQ latents, 800 epochs.
_base_ = ['./ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_8xb128-800e_in1k-256.py']

model = dict(denoiser=dict(arch='S'))
