# "DecQ (RAE decoder)": sample patches and queries jointly, drop the
# queries, decode the patch latents with a plain RAE decoder.
_base_ = ['./ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_8xb128-800e_in1k-256.py']

rae_tokenizer_ckpt = None  # required: the RAE stage-1 checkpoint
model = dict(
    decode_with=dict(
        tokenizer=dict(
            type='RAETokenizer',
            encoder=dict(
                type='TimmViTEncoder',
                model_name='vit_base_patch14_reg4_dinov2',
                input_size=224,
                pretrained=False),
            decoder=dict(type='ViTPixelDecoder', arch='XL', patch_size=16),
            noise_tau=0.0),
        ckpt=rae_tokenizer_ckpt,
        prefix='tokenizer',
        use_ema=True))
