# Table 3 paradigm: the VFM is unfrozen and trained with the reconstruction
# losses.
_base_ = ['../rae/rae_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py']

model = dict(tokenizer=dict(type='VFMFinetuneTokenizer'))
