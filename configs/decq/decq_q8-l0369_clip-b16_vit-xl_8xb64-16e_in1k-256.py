# DecQ stage 1 on a frozen CLIP-B/16, OpenAI's weights with their QuickGELU
# (one CLS token, dropped; CLIP's pre-norm before the first block is part of
# the trunk and kept). Condensers on blocks 0, 3, 6, 9: the quarter points of
# the VFM's 12 blocks, as for DINOv2-B (a deeper VFM would move them: 0, d/4,
# d/2, 3d/4). Latent grid = VFM input / VFM patch = 256 / 16 = 16x16 tokens of
# 768 channels: the latent shape of DINOv2-B/14 at 224 px, so the decoder (its
# grid follows the encoder; image side = grid x decoder patch = 16 x 16) still
# gives 256 px and stage 2 keeps its shift. RAE feeds its patch-16 VFMs at 256
# px for this reason. (At 224 px the grid would be 14x14 and the same decoder
# would give 224 px images: a decoder patch of 256/14 does not exist.) Here the
# CLIP weights were made at 224 px; timm resamples their 14x14 position table
# to 16x16 when it loads them. Mean/std are those of the weights (timm's
# pretrained_cfg).
_base_ = ['./decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py']

model = dict(
    tokenizer=dict(
        encoder=dict(
            model_name='vit_base_patch16_clip_quickgelu_224.openai',
            input_size=256)))
