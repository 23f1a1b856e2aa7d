"""The one override set that shrinks a shipped recipe to a CPU smoke run.

A recipe stays *as shipped*: the same model types, losses, loops, hooks,
evaluators, dataloaders, optimizer wrappers, EMA, checkpointing and
distributed wrapper. Only sizes change, plus what cannot exist offline:

========================  ===================================================
what                      shrunk to
========================  ===================================================
frozen VFM                same timm architecture and depth, width 48, 2 heads,
                          random weights, a 4 x 4 patch grid
pixel decoder             width 64, depth 2, 2 heads, patch 8 (32 px images)
condensers                2 heads (same queries, same layers)
discriminator             same timm family, 4 blocks of width 48 at 32 px,
                          random weights
LPIPS                     same network, random trunk (no download)
DiT-DH (and a guide)      body 64 x 2, head 96 x 1, 2 heads; 4 classes
sampler                   10 time points instead of 50 (same grid rule)
images                    a tiny ImageNet-layout folder (4 classes), crops
                          scaled to the decoder's output size
cached latents, stats,    written by the project's own tools from the shrunk
checkpoints               tokenizer (see ``tools/misc/smoke_config.py``)
FID / IS features         ``RandomConvFeatureExtractor`` (no Inception download)
schedule                  3 epochs (stage 1: discriminator from epoch 1, GAN
                          from epoch 2) or 2 epochs (stage 2), 2 iterations
                          each, batch 2, 1 data worker; validation at the end
                          of every epoch it happened at when shipped, scaled
hook intervals            logging every iteration, sample grids every 2
========================  ===================================================

:func:`shrink_overrides` returns these as a nested dict (MMEngine's
``_delete_`` where a whole entry is replaced) for a config already loaded;
:func:`write_shrunk_config` writes a config file that inherits the shipped
one and applies them, which is how the smoke runs and tests use it.
"""
import os
import os.path as osp
import pprint
from typing import Any, Dict, List, Optional

from mmengine.config import Config

# Sizes of the shrunk networks.
TINY_VFM = dict(embed_dim=48, num_heads=2)
TINY_GRID = 4
TINY_DECODER = dict(width=64, depth=2, num_heads=2, mlp_dim=128)
TINY_DECODER_PATCH = 8
TINY_DENOISER = dict(body_width=64, body_depth=2, body_heads=2,
                     head_width=96, head_depth=1, head_heads=2)
TINY_GUIDE = dict(body_width=32, body_depth=1, body_heads=2,
                  head_width=64, head_depth=1, head_heads=2)
TINY_DISC = dict(input_size=32, depth=4, embed_dim=48, num_heads=2,
                 block_indices=(1, 3))
NUM_CLASSES = 4
SAMPLER_POINTS = 10
BATCH_SIZE = 2
STAGE1_EPOCHS = 3
STAGE2_EPOCHS = 2
FEATURE_EXTRACTOR = dict(type='RandomConvFeatureExtractor', feature_dim=16,
                         num_classes=NUM_CLASSES, input_size=32)

STAGE1 = 'AutoencoderModel'
STAGE2 = 'LatentDiffusionModel'


def recipe_kind(cfg: Config) -> str:
    """``'stage1'`` or ``'stage2'`` from the config's model type.

    Raises:
        ValueError: for a model type the smoke runs do not know yet.
    """
    model_type = cfg.get('model', {}).get('type')
    if model_type == STAGE1:
        return 'stage1'
    if model_type == STAGE2:
        return 'stage2'
    raise ValueError(
        f'model.type={model_type!r}: the smoke override set knows '
        f'{STAGE1!r} (stage 1) and {STAGE2!r} (stage 2); extend '
        'decq_plugin/testing/shrink.py for a new kind of recipe')


def vfm_patch_size(encoder: Dict[str, Any]) -> int:
    """Patch size of the VFM that ``encoder`` (a ``TimmViTEncoder`` config)
    builds, read from the timm architecture on the meta device."""
    import timm
    import torch
    kwargs = dict(encoder.get('model_kwargs') or {})
    kwargs.update(num_classes=0, img_size=encoder.get('input_size', 224))
    with torch.device('meta'):
        vit = timm.create_model(encoder['model_name'], pretrained=False,
                                **kwargs)
    patch = vit.patch_embed.patch_size
    return int(patch[0] if isinstance(patch, (tuple, list)) else patch)


def tokenizer_overrides(tokenizer: Dict[str, Any]) -> Dict[str, Any]:
    """Overrides of one tokenizer config (``model.tokenizer`` or
    ``model.decode_with.tokenizer``)."""
    encoder = tokenizer.get('encoder', {})
    out: Dict[str, Any] = {}
    if encoder.get('type') == 'TimmViTEncoder':
        patch = vfm_patch_size(encoder)
        kwargs = dict(encoder.get('model_kwargs') or {})
        kwargs.update(TINY_VFM)
        out['encoder'] = dict(pretrained=False, weights_path=None,
                              input_size=patch * TINY_GRID,
                              model_kwargs=kwargs)
    elif encoder:
        raise ValueError(f"encoder type {encoder.get('type')!r}: the smoke "
                         'override set shrinks TimmViTEncoder only')
    if 'decoder' in tokenizer:
        out['decoder'] = dict(arch=dict(_delete_=True, **TINY_DECODER),
                              patch_size=TINY_DECODER_PATCH)
    if 'condenser' in tokenizer:
        out['condenser'] = dict(num_heads=TINY_VFM['num_heads'])
    return out


def image_size(tokenizer: Dict[str, Any]) -> int:
    """Side of the images the shrunk tokenizer decodes."""
    return TINY_GRID * TINY_DECODER_PATCH


def _scaled_interval(interval: int, shipped_epochs: int, epochs: int) -> int:
    if interval >= shipped_epochs:
        return epochs
    return max(1, min(interval, epochs))


def evaluator_overrides(evaluator: Any, reference: Optional[str]) -> Any:
    """Evaluator configs with an offline feature extractor (and the
    synthetic reference batch for generation metrics)."""
    if evaluator is None:
        return None
    if isinstance(evaluator, (list, tuple)):
        return [evaluator_overrides(e, reference) for e in evaluator]
    evaluator = dict(evaluator)
    if 'metrics' in evaluator:  # an Evaluator of several metrics
        evaluator['metrics'] = evaluator_overrides(evaluator['metrics'],
                                                   reference)
        return evaluator
    kind = evaluator.get('type')
    if kind in ('ReconstructionFIDMetric', 'GenerationMetric'):
        evaluator['feature_extractor'] = dict(FEATURE_EXTRACTOR)
        evaluator['batch_size'] = BATCH_SIZE * 2
    if kind == 'GenerationMetric' and evaluator.get('reference'):
        evaluator['reference'] = reference
    return evaluator


def _loader_overrides(loader: Optional[Dict[str, Any]],
                      dataset: Dict[str, Any],
                      batch_size: int = BATCH_SIZE
                      ) -> Optional[Dict[str, Any]]:
    if loader is None:
        return None
    out: Dict[str, Any] = dict(batch_size=batch_size, dataset=dataset)
    if loader.get('num_workers', 0) > 0:
        out['num_workers'] = 1
    return out


def _hook_overrides(cfg: Config) -> Dict[str, Any]:
    """Log every iteration; sample/recon grids every 2 iterations."""
    out: Dict[str, Any] = {}
    if 'logger' in cfg.get('default_hooks', {}):
        out['default_hooks'] = dict(logger=dict(interval=1))
    hooks = []
    for hook in cfg.get('custom_hooks', []) or []:
        hook = dict(hook)
        if hook.get('type') != 'EMAHook' and isinstance(
                hook.get('interval'), int):
            hook['interval'] = min(hook['interval'], 2)
        hooks.append(hook)
    if hooks:
        out['custom_hooks'] = hooks
    return out


def _schedule_overrides(cfg: Config, epochs: int) -> Dict[str, Any]:
    train_cfg = cfg.get('train_cfg', {})
    out: Dict[str, Any] = {}
    if 'max_epochs' in train_cfg:
        shipped = int(train_cfg['max_epochs'])
        out['train_cfg'] = dict(max_epochs=epochs)
        if 'val_interval' in train_cfg:
            out['train_cfg']['val_interval'] = _scaled_interval(
                int(train_cfg['val_interval']), shipped, epochs)
    elif 'max_iters' in train_cfg:
        out['train_cfg'] = dict(max_iters=2 * epochs)
        if 'val_interval' in train_cfg:
            out['train_cfg']['val_interval'] = 2
    return out


def stage1_overrides(cfg: Config, data_root: str) -> Dict[str, Any]:
    """Overrides of a stage-1 (``AutoencoderModel``) recipe."""
    model = cfg.model
    size = image_size(model.tokenizer)
    resize = size * 3 // 2  # the RAE crop: resize 384, crop 256
    out: Dict[str, Any] = dict(
        model=dict(tokenizer=tokenizer_overrides(model.tokenizer)))
    if model.get('perceptual_loss'):
        out['model']['perceptual_loss'] = dict(pretrained_trunk=False)
    if model.get('discriminator'):
        disc = dict(TINY_DISC)
        kwargs = dict(img_size=disc['input_size'], depth=disc['depth'],
                      embed_dim=disc['embed_dim'],
                      num_heads=disc['num_heads'])
        out['model']['discriminator'] = dict(
            pretrained=False, weights_path=None,
            input_size=disc['input_size'],
            block_indices=disc['block_indices'], model_kwargs=kwargs)
    if model.get('schedule_unit', 'epoch') == 'epoch':
        out['model'].update(disc_start=1, gan_start=2)
    else:
        out['model'].update(disc_start=2, gan_start=4)
    train = dict(_delete_=True, type='ImageNetDataset', data_root=data_root,
                 split='train',
                 transform=dict(type='RAETrainCrop', resize=resize,
                                crop=size))
    val = dict(_delete_=True, type='ImageNetDataset', data_root=data_root,
               split='val', transform=dict(type='AdmCenterCrop', size=size))
    for name, dataset in (('train_dataloader', train),
                          ('val_dataloader', val), ('test_dataloader', val)):
        loader = _loader_overrides(cfg.get(name), dataset)
        if loader is not None:
            out[name] = loader
    for name in ('val_evaluator', 'test_evaluator'):
        if cfg.get(name) is not None:
            out[name] = evaluator_overrides(cfg.get(name), None)
    out.update(_schedule_overrides(cfg, STAGE1_EPOCHS))
    out.update(_hook_overrides(cfg))
    return out


def stage2_overrides(cfg: Config, artefacts: Dict[str, str]
                     ) -> Dict[str, Any]:
    """Overrides of a stage-2 (``LatentDiffusionModel``) recipe.

    Args:
        artefacts: paths written from the shrunk tokenizer:
            ``tokenizer_ckpt``, ``latent_stats``, ``latent_root``,
            ``reference`` and, when the recipe needs them, ``guide_ckpt``
            and ``rae_tokenizer_ckpt``.
    """
    model = cfg.model
    tokenizer = tokenizer_overrides(model.tokenizer)
    tokenizer['latent_stats'] = artefacts['latent_stats']
    out: Dict[str, Any] = dict(model=dict(
        tokenizer=tokenizer,
        tokenizer_ckpt=artefacts['tokenizer_ckpt'],
        denoiser=dict(arch=dict(_delete_=True, **TINY_DENOISER)),
        num_classes=NUM_CLASSES))
    if 'num_points' in model.get('sampler', {}):
        out['model']['sampler'] = dict(num_points=SAMPLER_POINTS)
    guidance = model.get('guidance')
    if guidance and guidance.get('type') == 'AutoGuidance':
        out['model']['guidance'] = dict(
            guide=dict(arch=dict(_delete_=True, **TINY_GUIDE)),
            guide_ckpt=artefacts['guide_ckpt'])
    if model.get('decode_with'):
        out['model']['decode_with'] = dict(
            tokenizer=tokenizer_overrides(model.decode_with.tokenizer),
            ckpt=artefacts['rae_tokenizer_ckpt'])
    train_loader = cfg.get('train_dataloader')
    if train_loader is not None:
        out['train_dataloader'] = _loader_overrides(
            train_loader, dict(data_root=artefacts['latent_root']))
    labels = dict(num_classes=NUM_CLASSES, num_per_class=3)
    for name in ('val_dataloader', 'test_dataloader'):
        loader = _loader_overrides(cfg.get(name), labels, 2 * BATCH_SIZE)
        if loader is not None:
            out[name] = loader
    for name in ('val_evaluator', 'test_evaluator'):
        if cfg.get(name) is not None:
            out[name] = evaluator_overrides(cfg.get(name),
                                            artefacts['reference'])
    out.update(_schedule_overrides(cfg, STAGE2_EPOCHS))
    out.update(_hook_overrides(cfg))
    return out


def shrink_overrides(cfg: Config, data: Dict[str, str]) -> Dict[str, Any]:
    """The override set for ``cfg`` (stage 1 or stage 2).

    Args:
        cfg: the shipped config, loaded.
        data: ``{'data_root': ...}`` for stage 1; the stage-2 artefacts of
            :func:`stage2_overrides` for stage 2.
    """
    kind = recipe_kind(cfg)
    if kind == 'stage1':
        return stage1_overrides(cfg, data['data_root'])
    return stage2_overrides(cfg, data)


def _as_python(value: Any) -> str:
    return pprint.pformat(value, indent=1, width=79, sort_dicts=True)


def write_shrunk_config(config: str, out_path: str,
                        overrides: Dict[str, Any],
                        extra: Optional[List[str]] = None) -> str:
    """Write ``out_path``: a config that inherits ``config`` (absolute path)
    and applies ``overrides``; returns ``out_path``."""
    lines = [
        '# Smoke run: the shipped recipe below, shrunk in size only',
        '# (decq_plugin/testing/shrink.py).',
        f'_base_ = [{osp.abspath(config)!r}]',
        '',
    ]
    for key in sorted(overrides):
        lines.append(f'{key} = {_as_python(overrides[key])}')
    lines.extend(extra or [])
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    with open(out_path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    return out_path
