# ImageNet-1k at 256 px: RAE training crop (resize 384 bicubic, random crop
# 256, flip) and the ADM centre crop for evaluation.
# Layout: data/imagenet/{train,val}/<wnid>/*.JPEG
data_root = 'data/imagenet'

train_dataloader = dict(
    batch_size=64,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    # Per-sample seeds: augmentations independent of workers and resumes.
    sampler=dict(type='SeededSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='ImageNetDataset',
        data_root=data_root,
        split='train',
        transform=dict(type='RAETrainCrop', resize=384, crop=256)))

val_dataloader = dict(
    batch_size=64,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='ImageNetDataset',
        data_root=data_root,
        split='val',
        transform=dict(type='AdmCenterCrop', size=256)))
test_dataloader = val_dataloader

# rFID compares the 50k reconstructions with the 50k val images themselves.
val_evaluator = [
    dict(type='PSNRMetric'),
    dict(type='SSIMMetric'),
    dict(type='ReconstructionFIDMetric'),
]
test_evaluator = val_evaluator
