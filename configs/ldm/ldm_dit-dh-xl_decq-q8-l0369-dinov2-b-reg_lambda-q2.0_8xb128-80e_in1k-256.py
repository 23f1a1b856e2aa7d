# Ablation: query loss weight lambda_q = 2.0.
_base_ = ['./ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_8xb128-80e_in1k-256.py']

model = dict(loss=dict(query_weight=2.0))
