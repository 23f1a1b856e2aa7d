# DecQ stage 1: the RAE model plus 8 detail-condensing queries read from
# VFM blocks 0, 3, 6, 9; the decoder reads patches and queries jointly.
_base_ = ['./rae_dinov2-b-reg_vit-xl.py']

model = dict(
    tokenizer=dict(
        type='DecQTokenizer',
        condenser=dict(
            type='QueryCondenser',
            num_queries=8,
            layers=(0, 3, 6, 9),
            num_heads=12,
            mlp_ratio=4.0,
            tap='output',
            kv_tokens='patch',
            final_norm=True)))
