# Ablation (number of queries): 16 queries instead of 8.
_base_ = ['./decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py']

model = dict(tokenizer=dict(condenser=dict(num_queries=16)))
