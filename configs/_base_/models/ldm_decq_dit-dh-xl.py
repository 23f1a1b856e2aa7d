# Stage 2 on DecQ latents: the joint [256 patch ; 8 query] sequence is
# denoised by one DiT-DH-XL; loss = L_patch + lambda_q * L_query.
_base_ = ['./ldm_rae_dit-dh-xl.py']

model = dict(
    tokenizer=dict(
        type='DecQTokenizer',
        condenser=dict(
            type='QueryCondenser',
            num_queries=8,
            layers=(0, 3, 6, 9),
            num_heads=12)),
    loss=dict(query_weight=1.0))
