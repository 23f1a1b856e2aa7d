# Ablation (condenser layers): deep blocks only (6, 9).
_base_ = ['./decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py']

model = dict(tokenizer=dict(condenser=dict(layers=(6, 9))))
