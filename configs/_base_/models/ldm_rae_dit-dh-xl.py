# Stage 2 on RAE latents: DiT-DH-XL (LightningDiT body + wide DDT head)
# trained by flow matching on the frozen RAE tokenizer's normalised
# 16x16x768 latents, class-conditional (1000 classes + null class, label
# dropout 0.1 inside the denoiser).
tokenizer_ckpt = None  # required: stage-1 checkpoint (tools/train.py output)
latent_stats = None  # required: tools/compute_latent_stats.py output

model = dict(
    type='LatentDiffusionModel',
    tokenizer=dict(
        type='RAETokenizer',
        encoder=dict(
            type='TimmViTEncoder',
            model_name='vit_base_patch14_reg4_dinov2',
            input_size=224,
            pretrained=False),  # the VFM weights come from tokenizer_ckpt
        decoder=dict(type='ViTPixelDecoder', arch='XL', patch_size=16),
        noise_tau=0.0,
        latent_stats=latent_stats),
    tokenizer_ckpt=tokenizer_ckpt,
    use_ema=True,
    denoiser=dict(type='DiTDH', arch='XL', class_dropout=0.1),
    num_classes=1000,
    # t ~ logit-normal(0, 1) capped at 0.999, then the shift
    # a = sqrt(D / 4096) with D the patch latent size (6.93 for 16x16x768).
    loss=dict(
        type='FlowMatchingLoss',
        time_sampling='logit_normal',
        t_max=0.999,
        shift=None,
        shift_dim='patch',
        query_weight=1.0),
    # Euler ODE from t = 1 on RAE's 50 shifted points
    # shift(1 - linspace(0, 0.999, 50)), ending at t = 0.0069 for a = 6.93;
    # t_end=0.0 ends at t = 0 (the grid used here before).
    sampler=dict(type='EulerSampler', num_points=50, t_end=0.001),
    guidance=None)
# Batch 256 of DiT-DH-XL on one 141 GB GPU: --cfg-options
# model.compile.memory_budget=0.8 (compiled, recomputes activations in
# backward; 80 GiB, about 8% slower, docs/benchmarks.md) or --precision fp8.
