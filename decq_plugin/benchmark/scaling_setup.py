"""The configs and synthetic data of a scaling run
(:mod:`decq_plugin.benchmark.scaling`).

For a stage-1 or stage-2 config and a GPU count, :func:`prepare_config`
writes a config inheriting it with synthetic data of ImageNet layout (JPEGs;
latent shards and unit latent statistics for stage 2) of exactly
``iters x batch x GPUs`` samples, so every count trains ``iters``
iterations in one epoch, at the shipped per-GPU batch, random weights
(nothing is downloaded), every loss on from the first step (stage 1:
discriminator and GAN term), logging every iteration with no smoothing
(``log_processor.window_size=1``), no validation, no checkpoint and no
image grids. ``dry_run=True`` shrinks the models as the smoke runs do
(:mod:`decq_plugin.testing.shrink`).
"""
import json
import os
import os.path as osp
from typing import Any, Dict, Tuple

NO_VALIDATION = 10**6  # a val/checkpoint interval no short run reaches


def _deep_merge(base: Dict, extra: Dict) -> Dict:
    out = dict(base)
    for key, value in extra.items():
        if (isinstance(value, dict) and isinstance(out.get(key), dict)
                and not value.get('_delete_')):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolved(cfg: Any) -> Any:
    """``cfg`` with MMEngine's ``_delete_`` markers dropped (what the config
    means once merged)."""
    if isinstance(cfg, dict):
        return {k: _resolved(v) for k, v in cfg.items() if k != '_delete_'}
    return cfg


def write_train_images(root: str, count: int, size: Tuple[int, int],
                       unique: int = 64) -> str:
    """``count`` JPEGs in ``root/train/<wnid>/`` (and ``root/val`` linked to
    it): ``unique`` distinct images, the rest hard links to them (decoding
    costs the same, writing them does not). Returns ``root``."""
    from .. import testing
    from ..testing.synthetic import WNIDS
    done = osp.join(root, f'.complete_{count}')
    if osp.isfile(done):
        return root
    classes = len(WNIDS)
    seeds = osp.join(root, 'seeds')
    testing.make_imagenet_folder(seeds, num_classes=classes,
                                 train_per_class=-(-unique // classes),
                                 val_per_class=0, size=size[0])
    sources = sorted(osp.join(dp, f) for dp, _, fs in os.walk(
        osp.join(seeds, 'train')) for f in fs)
    for i in range(count):
        folder = osp.join(root, 'train', WNIDS[i % classes])
        os.makedirs(folder, exist_ok=True)
        path = osp.join(folder, f'img_{i:07d}.JPEG')
        if not osp.exists(path):
            os.link(sources[i % len(sources)], path)
    if not osp.exists(osp.join(root, 'val')):
        os.symlink('train', osp.join(root, 'val'))
    with open(done, 'w', encoding='utf-8') as f:
        f.write('ok\n')
    return root


def write_latents(root: str, shapes: Dict[str, tuple], count: int,
                  num_classes: int) -> str:
    """``count`` random normalised latents (float16) in shards (a folder
    of fewer, from an earlier run, is written anew)."""
    import shutil

    import torch

    from ..datasets.latent_dataset import LatentShardWriter
    meta = osp.join(root, 'meta.json')
    if osp.isfile(meta):
        with open(meta, encoding='utf-8') as f:
            if json.load(f).get('count', 0) >= count:
                return root
        shutil.rmtree(root)
    g = torch.Generator().manual_seed(0)
    with LatentShardWriter(root, shard_size=1024, tokenizer='synthetic',
                           normalised=True) as writer:
        for start in range(0, count, 256):
            n = min(256, count - start)
            writer.add({k: torch.randn(n, *s, generator=g).half()
                        for k, s in shapes.items()},
                       torch.randint(0, num_classes, (n, ), generator=g))
    return root


def latent_shapes(tokenizer_cfg: Dict) -> Dict[str, tuple]:
    """Per-sample latent shapes of a tokenizer config (built on the meta
    device, without statistics)."""
    import torch

    from ..registry import MODELS
    from ..utils import register_all_modules
    register_all_modules(init_default_scope=True)
    cfg = dict(tokenizer_cfg, latent_stats=None)
    with torch.device('meta'):
        tokenizer = MODELS.build(cfg)
    return {k: tuple(v) for k, v in tokenizer.latent_shapes.items()}


def _common_overrides(cfg) -> Dict[str, Any]:
    """One epoch, every iteration logged unsmoothed; no validation, no
    checkpoint, no image grids."""
    hooks = [dict(h, interval=NO_VALIDATION)
             if h.get('type') != 'EMAHook' and 'interval' in h else dict(h)
             for h in cfg.get('custom_hooks', []) or []]
    out: Dict[str, Any] = dict(
        train_cfg=dict(max_epochs=1, val_begin=NO_VALIDATION,
                       val_interval=NO_VALIDATION),
        default_hooks=dict(logger=dict(interval=1),
                           checkpoint=dict(interval=NO_VALIDATION,
                                           save_last=False)),
        log_processor=dict(window_size=1))
    if hooks:
        out['custom_hooks'] = hooks
    return out


def stage1_overrides(cfg, data: str, samples: int, batch: int,
                     dry_run: bool) -> Dict[str, Any]:
    """Overrides of a stage-1 config: synthetic images in ``data``, every
    loss on from the first step."""
    from ..testing import shrink
    model = cfg.model
    body: Dict[str, Any] = dict(model=dict(disc_start=0, gan_start=0))
    if dry_run:
        body = _deep_merge(shrink.stage1_overrides(cfg, data), body)
    else:
        body['model']['tokenizer'] = dict(encoder=dict(pretrained=False))
        if model.get('perceptual_loss'):
            body['model']['perceptual_loss'] = dict(pretrained_trunk=False)
        if model.get('discriminator'):
            body['model']['discriminator'] = dict(pretrained=False)
        for name in ('val_evaluator', 'test_evaluator'):
            body[name] = shrink.evaluator_overrides(cfg.get(name), None)
        for name in ('val_dataloader', 'test_dataloader'):
            body[name] = dict(dataset=dict(data_root=data, max_samples=8))
    loader = dict(batch_size=batch,
                  dataset=dict(data_root=data, max_samples=samples))
    return _deep_merge(body, dict(train_dataloader=loader))


def stage2_overrides(cfg, data: str, samples: int, batch: int,
                     dry_run: bool, data_count: int = 0) -> Dict[str, Any]:
    """Overrides of a stage-2 config; writes its latents (``data_count``,
    at least ``samples``), unit statistics and a reference batch under
    ``data``.

    Raises:
        ValueError: a config that needs a second checkpoint.
    """
    import torch

    from ..testing import make_reference_npz, shrink
    model = cfg.model
    guidance = model.get('guidance') or {}
    if model.get('decode_with') or guidance.get('type') == 'AutoGuidance':
        raise ValueError(f'{cfg.filename}: the scaling run measures stage-2 '
                         'configs that need no second checkpoint (no '
                         'model.decode_with, no AutoGuidance)')
    os.makedirs(data, exist_ok=True)
    stats = osp.join(data, 'stats.pt')
    latents = osp.join(data, 'latents')
    reference = osp.join(data, 'reference.npz')
    if dry_run:
        body = shrink.stage2_overrides(cfg, dict(
            tokenizer_ckpt=None, latent_stats=stats, latent_root=latents,
            reference=reference))
        classes = shrink.NUM_CLASSES
    else:
        classes = int(model.get('num_classes', 1000))
        body = dict(model=dict(tokenizer=dict(latent_stats=stats),
                               tokenizer_ckpt=None))
        if 'encoder' in model.tokenizer:
            body['model']['tokenizer']['encoder'] = dict(pretrained=False)
        for name in ('val_evaluator', 'test_evaluator'):
            body[name] = shrink.evaluator_overrides(cfg.get(name), reference)
    shapes = latent_shapes(_resolved(_deep_merge(
        model.tokenizer.to_dict(), body['model']['tokenizer'])))
    torch.save({f'{k}_{s}': (torch.zeros(shape) if s == 'mean' else
                             torch.ones(shape))
                for k, shape in shapes.items() for s in ('mean', 'var')},
               stats)
    write_latents(latents, shapes, max(samples, data_count), classes)
    if not osp.isfile(reference):
        make_reference_npz(reference, num_images=16, size=32)
    loader = dict(batch_size=batch, dataset=dict(
        data_root=latents, use_flip=False, max_samples=samples))
    return _deep_merge(body, dict(train_dataloader=loader))


def prepare_config(config: str, work: str, gpus: int, iters: int,
                   dry_run: bool, data_gpus: int = 1) -> Dict[str, Any]:
    """Write ``work/scaling.py``: ``config`` with synthetic data of
    ``iters x batch x gpus`` samples, taken from data written once beside
    ``work`` for up to ``data_gpus`` GPUs; returns ``{'config', 'batch',
    'stage'}``."""
    from ..testing import shrink, write_shrunk_config
    from ..utils.launch import load_config
    cfg = load_config(config)
    stage = shrink.recipe_kind(cfg)
    batch = (shrink.BATCH_SIZE if dry_run else
             int(cfg.train_dataloader.batch_size))
    samples = iters * batch * gpus
    count = iters * batch * max(gpus, data_gpus)
    os.makedirs(work, exist_ok=True)
    data = osp.join(osp.dirname(osp.abspath(work)), 'data')
    if stage == 'stage1':
        size = shrink.image_size(cfg.model.tokenizer) if dry_run else 256
        body = stage1_overrides(cfg, data, samples, batch, dry_run)
        write_train_images(data, count, (size * 11 // 8, size * 3 // 2))
    else:
        body = stage2_overrides(cfg, data, samples, batch, dry_run, count)
    body = _deep_merge(body, _common_overrides(cfg))
    path = write_shrunk_config(osp.abspath(config),
                               osp.join(work, 'scaling.py'), body)
    return dict(config=path, batch=batch, stage=stage)
