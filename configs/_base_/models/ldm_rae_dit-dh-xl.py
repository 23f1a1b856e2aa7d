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
    guidance=None,
    # Eager unless --compile; compiled, the partitioner keeps 80% of the
    # activations and recomputes the cheapest rest in backward, so batch 256
    # of DiT-DH-XL fits in less than 100 GiB (docs/benchmarks.md, "Memory").
    # For the last ~2% of speed when memory is plentiful:
    # --cfg-options model.compile.memory_budget=1.0
    compile=dict(enabled=False, memory_budget=0.8))
