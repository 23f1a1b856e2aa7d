# The built-in default: crops of photos bundled with scikit-image (no
# download). Labels are the photo index.
image_size = 64

train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='DemoImageDataset',
        mode='train',
        image_size=image_size,
        samples_per_epoch=256))

val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='DemoImageDataset', mode='val', image_size=image_size))
test_dataloader = val_dataloader

# Metrics that need no download.
val_evaluator = [dict(type='PSNRMetric'), dict(type='SSIMMetric')]
test_evaluator = val_evaluator
