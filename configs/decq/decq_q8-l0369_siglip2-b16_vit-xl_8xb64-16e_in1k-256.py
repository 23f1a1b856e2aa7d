# DecQ stage 1 on a frozen SigLIP2-B/16 (no CLS token: all 256 tokens are
# patches; its attention- pooling head is dropped). Condensers on blocks 0, 3,
# 6, 9: the quarter points of the VFM's 12 blocks, as for DINOv2-B (a deeper
# VFM would move them: 0, d/4, d/2, 3d/4). Latent grid = VFM input / VFM patch
# = 256 / 16 = 16x16 tokens of 768 channels: the latent shape of DINOv2-B/14 at
# 224 px, so the decoder (its grid follows the encoder; image side = grid x
# decoder patch = 16 x 16) still gives 256 px and stage 2 keeps its shift. RAE
# feeds its patch-16 VFMs at 256 px for this reason. (At 224 px the grid would
# be 14x14 and the same decoder would give 224 px images: a decoder patch of
# 256/14 does not exist.) Here timm has SigLIP2-B/16 weights made for 256 px,
# so no position table is resampled. Mean/std are those of the weights (timm's
# pretrained_cfg).
_base_ = ['./decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py']

model = dict(
    tokenizer=dict(
        encoder=dict(
            model_name='vit_base_patch16_siglip_256.v2_webli',
            input_size=256)))
