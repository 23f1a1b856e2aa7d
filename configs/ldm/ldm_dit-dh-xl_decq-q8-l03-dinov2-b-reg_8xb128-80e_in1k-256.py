# Ablation: condensers on shallow blocks only (0, 3) (tokenizer from
# the stage-1 config decq_q8-l03_...).
_base_ = ['./ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_8xb128-80e_in1k-256.py']

model = dict(tokenizer=dict(condenser=dict(layers=(0, 3))))
