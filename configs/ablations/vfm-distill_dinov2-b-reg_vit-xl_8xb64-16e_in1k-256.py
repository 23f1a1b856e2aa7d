# Table 3 paradigm: unfrozen VFM plus an L2 loss to a frozen copy's outputs.
_base_ = ['../rae/rae_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py']

model = dict(tokenizer=dict(type='VFMDistillTokenizer', distill_weight=1.0))
