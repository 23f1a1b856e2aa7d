# Table 3 paradigm: frozen VFM, one query per patch through a 32-d
# bottleneck, concatenated to the patch tokens along channels.
_base_ = ['../decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py']

model = dict(
    tokenizer=dict(type='VFMFeatConcatTokenizer', bottleneck_dim=32))
