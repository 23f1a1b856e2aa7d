# Sampling with classifier-free guidance inside a guidance interval.
# Scale and interval are starting points to tune on FID.
_base_ = ['./ldm_dit-dh-xl_rae-dinov2-b-reg_8xb128-800e_in1k-256.py']

model = dict(
    guidance=dict(
        _delete_=True, type='ClassifierFreeGuidance', scale=1.5,
        interval=(0.0, 0.7)))
