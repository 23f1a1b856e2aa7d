# Sampling with autoguidance: guided by a DiT-DH-S checkpoint of the same
# latent space (v = v_S + s (v_XL - v_S)), scale 1.42 as RAE at 256 px.
# RAE's released DiT-DH-S fills the guide:
# tools/convert_rae_checkpoint.py THIS_CONFIG --guide DiTDH-S.pt ...
_base_ = ['./ldm_dit-dh-xl_rae-dinov2-b-reg_8xb128-800e_in1k-256.py']

guide_ckpt = None  # required: a DiT-DH-S stage-2 checkpoint
model = dict(
    guidance=dict(
        _delete_=True,
        type='AutoGuidance',
        scale=1.42,
        guide=dict(type='DiTDH', arch='S'),
        guide_ckpt=guide_ckpt,
        guide_prefix='denoiser'))
