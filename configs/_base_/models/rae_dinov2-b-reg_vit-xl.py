# RAE stage 1: frozen DINOv2-B/14 with 4 registers at 224 px (16x16x768
# latents), ViT-XL pixel decoder (patch 16 -> 256 px), L1 + LPIPS + GAN.
model = dict(
    type='AutoencoderModel',
    tokenizer=dict(
        type='RAETokenizer',
        encoder=dict(
            type='TimmViTEncoder',
            model_name='vit_base_patch14_reg4_dinov2',
            input_size=224,
            pretrained=True,
            weights_path=None),  # or a local model.safetensors
        decoder=dict(type='ViTPixelDecoder', arch='XL', patch_size=16),
        noise_tau=0.8,
        latent_stats=None),
    perceptual_loss=dict(type='LPIPSLoss', net='vgg'),
    discriminator=dict(
        type='DINODiscriminator',
        model_name='vit_small_patch8_224.dino',
        pretrained=True,
        weights_path=None),
    diffaug=dict(type='DiffAug', policy='color,translation'),
    l1_weight=1.0,
    perceptual_weight=1.0,
    gan_weight=0.75,
    disc_start=6,
    gan_start=8,
    schedule_unit='epoch')
