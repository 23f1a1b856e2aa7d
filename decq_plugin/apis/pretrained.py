"""Weights others can load: a folder with ``config.json``,
``model.safetensors`` and ``SHA256SUMS``, read back without MMEngine config
files or pickle.

    export_pretrained('configs/decq/....py', 'work_dirs/.../epoch_16.pth',
                      'exported/decq')              # tokenizer, EMA weights
    tokenizer = load_pretrained('exported/decq')    # no config file needed

``config.json`` holds the module's own config (the arguments its registered
class is built from, plain JSON), what it is (``kind``: ``'tokenizer'`` or
``'denoiser'``), its latent shapes and where the weights came from. A
tokenizer's frozen VFM is stored with the rest (``include_vfm=True``) or
only referenced by its timm name (the loader then builds it with timm's
pretrained weights, or from ``vfm_weights`` given to :func:`load_pretrained`).
Latent statistics travel as the normaliser's buffers. ``SHA256SUMS``
holds the checksums of both files (see :mod:`.pretrained_files`).

Loading runs nothing named in the folder: ``config.json`` may only name
classes registered in ``decq_plugin`` and timm model names, and no files to
read (:func:`check_exported_config`); anything else is refused before any
import or build.
"""
import copy
import os
import os.path as osp
from typing import Dict, Optional, Union

import torch
from torch import nn

from decq_plugin.registry import MODELS
from decq_plugin.utils.safe_config import check_buildable, iter_key_paths
from .pretrained_files import (CHECKSUM_FILE, CONFIG_FILE, WEIGHTS_FILE,
                               PretrainedFormatError, read_config_json,
                               read_weights, verify_folder, write_checksums,
                               write_json, write_weights)

FORMAT = 'decq_plugin-pretrained/1'
VFM_PREFIX = 'encoder.vit.'
KINDS = ('tokenizer', 'denoiser')
# Arguments that name files to read: an exported config leaves them unset
# (the weights are in model.safetensors); only load_pretrained's caller may
# set one (vfm_weights).
FILE_KEYS = ('weights_path', 'trunk_weights_path', 'latent_stats',
             'tokenizer_ckpt', 'guide_ckpt', 'checkpoint', 'checkpoint_path',
             'init_cfg', 'pretrained_cfg', 'pretrained_cfg_overlay')


def _plain(value):
    """Config values -> JSON-safe values (tuples become lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise PretrainedFormatError(f'config value {value!r} of type '
                                f'{type(value).__name__} is not plain data')


def save_pretrained(module: nn.Module,
                    module_cfg: dict,
                    out_dir: str,
                    kind: str,
                    include_vfm: bool = True,
                    extra: Optional[dict] = None) -> Dict[str, str]:
    """Write ``module`` (built from ``module_cfg``) to ``out_dir``.

    Args:
        module: a tokenizer or a denoiser holding the weights to store.
        module_cfg: the registry config ``module`` was built from (its
            derived arguments filled in).
        out_dir: the folder (made if missing).
        kind: ``'tokenizer'`` or ``'denoiser'``.
        include_vfm: store a tokenizer's frozen VFM weights; if False they
            are left out and the config asks timm for them by name.
        extra: more JSON-safe facts for ``config.json``.

    Returns:
        ``{'config': path, 'weights': path, 'checksums': path}``.

    Raises:
        UnsafeConfigError: ``module_cfg`` names something
            :func:`load_pretrained` would refuse (nothing is written).
    """
    if kind not in KINDS:
        raise ValueError(f'kind={kind!r} must be one of {KINDS}')
    cfg = _plain(copy.deepcopy(dict(module_cfg)))
    state = {k: v.detach().cpu().contiguous().clone()
             for k, v in module.state_dict().items()}
    vfm = None
    if kind == 'tokenizer':
        cfg['latent_stats'] = None  # the statistics are buffers
        encoder = cfg.get('encoder', {})
        vfm = dict(model_name=encoder.get('model_name'),
                   type=encoder.get('type'), included=bool(include_vfm))
        if include_vfm:
            encoder['pretrained'] = False  # the weights are in the file
            if encoder.get('weights_path') is not None:
                encoder['weights_path'] = None  # a local file of the run
        else:
            if encoder.get('type') != 'TimmViTEncoder':
                raise ValueError('include_vfm=False needs a TimmViTEncoder '
                                 '(the VFM is referenced by its timm name)')
            state = {k: v for k, v in state.items()
                     if not k.startswith(VFM_PREFIX)}
            encoder.update(pretrained=True, weights_path=None)
    meta = dict(format=FORMAT, kind=kind, type=cfg.get('type'), model=cfg,
                vfm=vfm, **_plain(extra or {}))
    # what the loader would refuse is not written
    check_exported_config(meta, osp.join(out_dir, CONFIG_FILE))
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(config=osp.join(out_dir, CONFIG_FILE),
                 weights=osp.join(out_dir, WEIGHTS_FILE),
                 checksums=osp.join(out_dir, CHECKSUM_FILE))
    write_weights(state, paths['weights'])
    write_json(meta, paths['config'])
    write_checksums(out_dir, (CONFIG_FILE, WEIGHTS_FILE))  # last
    return paths


def check_exported_config(meta: dict, path: str) -> None:
    """Raise :class:`PretrainedFormatError` (or
    :class:`~decq_plugin.utils.safe_config.UnsafeConfigError`) unless
    ``meta`` (``config.json`` read from ``path``) is an export's config
    that can be built without running anything it names."""
    if meta.get('format') != FORMAT or meta.get('kind') not in KINDS:
        raise PretrainedFormatError(
            f'{path!r}: format {meta.get("format")!r} / kind '
            f'{meta.get("kind")!r}; expected {FORMAT!r} and one of {KINDS}')
    model = meta.get('model')
    if not isinstance(model, dict) or not isinstance(model.get('type'), str):
        raise PretrainedFormatError(
            f"{path!r}: 'model' must be an object with a 'type'")
    check_buildable(model, path, 'model', MODELS)
    for key, value in iter_key_paths(model, 'model'):
        if key.rsplit('.', 1)[-1] in FILE_KEYS and value is not None:
            raise PretrainedFormatError(
                f'{path!r}: {key} names {value!r}; an exported config reads '
                'no files besides model.safetensors (a referenced VFM file '
                'is given as load_pretrained(..., vfm_weights=FILE))')
    vfm = meta.get('vfm')
    if meta['kind'] == 'tokenizer' and not (
            isinstance(vfm, dict) and isinstance(vfm.get('included'), bool)
            and isinstance(model.get('encoder'), dict)):
        raise PretrainedFormatError(
            f"{path!r}: a tokenizer needs 'vfm' with a boolean 'included' "
            "and 'model.encoder'")


def read_pretrained_config(folder: str,
                           allow_unverified: bool = False) -> dict:
    """``config.json`` of an exported folder, checked: the checksums of
    ``SHA256SUMS`` (see :func:`~.pretrained_files.verify_folder`), then
    :func:`check_exported_config`."""
    verify_folder(folder, (CONFIG_FILE, WEIGHTS_FILE), allow_unverified)
    path = osp.join(folder, CONFIG_FILE)
    meta = read_config_json(path)
    check_exported_config(meta, path)
    return meta


def load_pretrained(folder: str,
                    device: Union[str, torch.device] = 'cpu',
                    vfm_weights: Optional[str] = None,
                    allow_unverified: bool = False) -> nn.Module:
    """Build and load an exported tokenizer or denoiser, in eval mode.

    Nothing the folder names is imported or run: its config may only name
    classes registered in ``decq_plugin`` (checked before anything is
    built), and its files must match their ``SHA256SUMS`` checksums.

    Args:
        folder: written by :func:`save_pretrained` / ``tools/export.py``.
        device: where the module goes.
        vfm_weights: local weights file of a referenced (not included)
            VFM; without it timm downloads the named weights.
        allow_unverified: load a folder that has no ``SHA256SUMS`` (exports
            written before checksums existed) with a warning, instead of
            refusing it. Listed checksums are always checked.

    Raises:
        PretrainedFormatError: a file is missing, damaged or malformed
            (the message names it).
        UnsafeConfigError: the config names something not registered in
            ``decq_plugin`` (the message names the key).
    """
    meta = read_pretrained_config(folder, allow_unverified)
    cfg = copy.deepcopy(meta['model'])
    referenced = meta['kind'] == 'tokenizer' and not meta['vfm']['included']
    if referenced and vfm_weights is not None:
        cfg['encoder']['weights_path'] = vfm_weights
    module = MODELS.build(cfg)
    path = osp.join(folder, WEIGHTS_FILE)
    state = read_weights(path)
    own = module.state_dict()
    shapes = [f'{k}: file {tuple(v.shape)} vs config {tuple(own[k].shape)}'
              for k, v in state.items()
              if k in own and v.shape != own[k].shape]
    if shapes:
        raise PretrainedFormatError(
            f'{path!r} does not fit {CONFIG_FILE}: {len(shapes)} shape '
            f'mismatches, e.g. {shapes[:3]}; export it again')
    missing, unexpected = module.load_state_dict(state, strict=False)
    if referenced:  # the VFM came from timm, not from the file
        missing = [k for k in missing if not k.startswith(VFM_PREFIX)]
    if missing or unexpected:
        raise PretrainedFormatError(
            f'{folder!r}: the weights do not fit the config: missing '
            f'{missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} '
            f'({len(unexpected)})')
    return module.to(device).eval()


# -- from a training config and checkpoint -----------------------------------
def _tokenizer_part(cfg) -> tuple:
    """(tokenizer config, checkpoint prefix) of a stage-1/2 config."""
    model_cfg = copy.deepcopy(cfg.model)
    if 'tokenizer' in model_cfg:
        return model_cfg['tokenizer'], 'tokenizer'
    return model_cfg, ''


def _denoiser_cfg(cfg) -> dict:
    """The stage-2 denoiser config with the arguments the model derives
    from the tokenizer (latent shapes, classes) filled in."""
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.update(tokenizer_ckpt=None, guidance=None, decode_with=None)
    model_cfg['tokenizer']['encoder']['pretrained'] = False
    model_cfg['tokenizer']['latent_stats'] = None
    with torch.device('meta'):
        model = MODELS.build(model_cfg)
    defaults = model._denoiser_defaults(model_cfg.get('num_classes'))
    return model._with_defaults(dict(cfg.model['denoiser']), defaults)


def export_pretrained(config: str,
                      checkpoint: str,
                      out_dir: str,
                      part: str = 'auto',
                      use_ema: bool = True,
                      include_vfm: bool = True,
                      cfg_options: Optional[dict] = None) -> Dict[str, str]:
    """Export the tokenizer or the DiT-DH of a training run.

    Args:
        config: the run's config file.
        checkpoint: its checkpoint (``tools/train.py`` output).
        out_dir: the folder to write.
        part: ``'tokenizer'``, ``'denoiser'`` or ``'auto'`` (the denoiser of
            a stage-2 config, else the tokenizer).
        use_ema: the EMA weights (default) or the raw ones.
        include_vfm: see :func:`save_pretrained`.
        cfg_options: config overrides (dotted keys).
    """
    from decq_plugin.models.diffusion.samplers import load_frozen_weights
    from .build import _load_config
    cfg = _load_config(config, cfg_options)
    if part == 'auto':
        part = 'denoiser' if 'denoiser' in cfg.model else 'tokenizer'
    if part not in KINDS:
        raise ValueError(f'part={part!r} must be one of {KINDS} or auto')
    source = dict(config=osp.basename(config),
                  checkpoint=osp.basename(checkpoint),
                  weights='ema' if use_ema else 'raw')
    if part == 'tokenizer':
        module_cfg, prefix = _tokenizer_part(cfg)
        module_cfg['encoder']['pretrained'] = False
        module_cfg['latent_stats'] = None
        module = MODELS.build(module_cfg)
        load_frozen_weights(module, checkpoint, prefix, use_ema)
        extra = dict(latent_shapes=module.latent_shapes,
                     image_size=module.image_size)
    else:
        if 'denoiser' not in cfg.model:
            raise ValueError(f'{config!r} has no model.denoiser to export')
        module_cfg = _denoiser_cfg(cfg)
        module = MODELS.build(module_cfg)
        load_frozen_weights(module, checkpoint, 'denoiser', use_ema)
        extra = dict(num_classes=int(module.num_classes))
    return save_pretrained(module, module_cfg, out_dir, part, include_vfm,
                           extra=dict(extra, source=source))
