# Cached latents of ImageNet-1k train (ADM centre crop + flips), written by
#   tools/extract_latents.py STAGE1_CONFIG CKPT --stats STATS --out-dir ...
# and class-balanced labels (50 per class, 50k samples) for evaluation.
latent_root = 'data/latents/imagenet256'  # required: extract_latents output

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    # Per-sample seeds: augmentations independent of workers and resumes.
    sampler=dict(type='SeededSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='CachedLatentDataset', data_root=latent_root,
                 use_flip=True))

val_dataloader = dict(
    batch_size=125,
    num_workers=2,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ClassLabelDataset', num_classes=1000,
                 num_per_class=50, seed=0))
test_dataloader = val_dataloader

# FID / sFID / IS / precision / recall against the ADM reference batch, as
# the ADM evaluator computes them (IS on splits of 5,000 in the random class
# order of ClassLabelDataset).
val_evaluator = dict(
    type='GenerationMetric',
    metric_names=('fid', 'is', 'precision', 'recall', 'sfid'),
    reference='data/VIRTUAL_imagenet256_labeled.npz')
test_evaluator = val_evaluator
