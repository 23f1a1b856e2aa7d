# Ablation: 4 queries (tokenizer from the matching stage-1 ablation
# config decq_q4-l0369_...; its checkpoint and latent stats).
_base_ = ['./ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_8xb128-80e_in1k-256.py']

model = dict(tokenizer=dict(condenser=dict(num_queries=4)))
