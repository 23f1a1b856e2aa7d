"""diffusers' ``AutoencoderRAE`` folders: read one (the layout RAE's Hub
weights are published in) and write a trained RAE tokenizer as one.

A folder is ``config.json`` + ``diffusion_pytorch_model.safetensors``; see
:mod:`decq_plugin.models.diffusers_layout` for the keys. Reading needs
neither diffusers nor transformers (JSON and safetensors only); what is
written loads with ``diffusers.AutoencoderRAE.from_pretrained(folder)`` and
encodes / decodes as the tokenizer does. Only RAE tokenizers on a timm
DINOv2-with-registers VFM have that form: a DecQ tokenizer (query latents,
condensers) is refused, its own format being
:func:`decq_plugin.apis.export_pretrained`.
"""
import importlib.metadata
import json
import os
import os.path as osp
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from decq_plugin.models.diffusers_layout import (decoder_rae_to_diffusers,
                                                 dinov2_timm_to_hf,
                                                 stats_to_diffusers)
from decq_plugin.models.rae_layout import RAELayoutError, decoder_to_rae
from decq_plugin.registry import MODELS

CONFIG_NAME = 'config.json'
WEIGHTS_NAME = 'diffusion_pytorch_model.safetensors'
CLASS_NAME = 'AutoencoderRAE'
#: ``AutoencoderRAE.__init__`` defaults, used for keys a config.json omits.
DEFAULTS = dict(encoder_type='dinov2', encoder_hidden_size=768,
                encoder_patch_size=14, encoder_num_hidden_layers=12,
                decoder_hidden_size=512, decoder_num_hidden_layers=8,
                decoder_num_attention_heads=16,
                decoder_intermediate_size=2048, patch_size=16,
                encoder_input_size=224, image_size=None, num_channels=3,
                encoder_norm_mean=[0.485, 0.456, 0.406],
                encoder_norm_std=[0.229, 0.224, 0.225], latents_mean=None,
                latents_std=None, noise_tau=0.0, reshape_to_2d=True,
                use_encoder_loss=False, scaling_factor=1.0)
#: transformers builds every AutoencoderRAE encoder with 64-wide heads.
HEAD_DIM = 64
#: diffusers' sin-cos table (``base_size=16``) equals RAE's on this grid
#: only; on a grid g it uses positions scaled by 16 / g.
DIFFUSERS_BASE_GRID = 16


class DiffusersFormatError(RAELayoutError):
    """A folder is not a diffusers ``AutoencoderRAE`` this package reads,
    or a tokenizer cannot be written as one."""


# ---------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------
def read_diffusers_folder(folder: str
                          ) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """``(config, state)`` of an ``AutoencoderRAE`` folder, every field of
    ``AutoencoderRAE`` in ``config`` (its defaults where the file has
    none). Raises :class:`DiffusersFormatError` naming the file."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f'diffusers folder not found: {folder!r}')
    config_path = osp.join(folder, CONFIG_NAME)
    weights_path = osp.join(folder, WEIGHTS_NAME)
    if not osp.isfile(weights_path) and osp.isfile(weights_path +
                                                   '.index.json'):
        raise DiffusersFormatError(
            f'{folder!r} holds sharded weights ({WEIGHTS_NAME}.index.json); '
            'save the model as one file (AutoencoderRAE.save_pretrained('
            'folder, max_shard_size="100GB")) and convert that')
    for path in (config_path, weights_path):
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'{path!r} is missing: an AutoencoderRAE folder holds '
                f'{CONFIG_NAME} and {WEIGHTS_NAME} (download both, e.g. '
                'huggingface-cli download nyu-visionx/RAE-dinov2-wReg-base-'
                'ViTXL-n08 --local-dir FOLDER)')
    try:
        with open(config_path, encoding='utf-8') as f:
            raw = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise DiffusersFormatError(
            f'{config_path!r} is not valid JSON ({err}); download it '
            'again') from None
    if not isinstance(raw, dict):
        raise DiffusersFormatError(f'{config_path!r} holds no JSON object')
    name = raw.get('_class_name', CLASS_NAME)
    if name != CLASS_NAME:
        raise DiffusersFormatError(
            f"{config_path!r} is a {name!r}, not an {CLASS_NAME!r}")
    config = dict(DEFAULTS)
    config.update({k: v for k, v in raw.items() if not k.startswith('_')})
    for key in ('encoder_norm_mean', 'encoder_norm_std'):
        if config[key] is None:  # AutoencoderRAE's default: ImageNet
            config[key] = DEFAULTS[key]
    if config['encoder_type'] != 'dinov2':
        raise DiffusersFormatError(
            f"{config_path!r}: encoder_type={config['encoder_type']!r}; "
            "only 'dinov2' (DINOv2 with registers) folders convert to this "
            "package's timm encoders")
    if not config['reshape_to_2d']:
        raise DiffusersFormatError(
            f'{config_path!r}: reshape_to_2d=false; only [B, C, h, w] '
            'latents convert')
    from safetensors.torch import load_file
    try:
        state = load_file(weights_path, device='cpu')
    except Exception as err:  # SafetensorError, OSError
        raise DiffusersFormatError(
            f'{weights_path!r} cannot be read: it is truncated or damaged '
            f'({type(err).__name__}: {err}); download it again') from None
    return config, state


# ---------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------
def _refuse(what: str) -> DiffusersFormatError:
    return DiffusersFormatError(
        f'this tokenizer cannot be written as a diffusers AutoencoderRAE: '
        f'{what}. Export it in this package\'s own format instead '
        '(tools/export.py without --format diffusers)')


def _check_rae_tokenizer(tokenizer: nn.Module) -> None:
    kind = type(tokenizer).__name__
    if kind != 'RAETokenizer' or getattr(tokenizer, 'num_queries', 0):
        raise _refuse(
            f'it is a {kind}; AutoencoderRAE holds a frozen VFM and a '
            'patch-only pixel decoder, with no place for query latents or '
            'condensers')
    encoder, decoder = tokenizer.encoder, tokenizer.decoder
    vit = getattr(encoder, 'vit', None)
    if vit is None or getattr(vit, 'reg_token', None) is None or \
            encoder.num_prefix_tokens != 5 or not getattr(
                vit, 'no_embed_class', False):
        raise _refuse(f'its VFM ({type(encoder).__name__}) is not a timm '
                      'DINOv2 with 4 registers, the only encoder of '
                      "AutoencoderRAE's 'dinov2' type")
    heads = vit.blocks[0].attn.num_heads
    if vit.embed_dim != heads * HEAD_DIM:
        raise _refuse(f'its VFM has {heads} heads of width '
                      f'{vit.embed_dim // heads}; transformers builds '
                      f'AutoencoderRAE encoders with width-{HEAD_DIM} heads')
    if vit.blocks[0].mlp.fc1.out_features != 4 * vit.embed_dim:
        raise _refuse('its VFM MLP is not 4x wide')
    if encoder.antialias:
        raise _refuse('its VFM input is resized with anti-aliasing')
    if decoder.cls_token is None or decoder.out_mean is None:
        raise _refuse("its decoder is not in RAE's form (CLS token, "
                      'normalised output)')
    if not (torch.equal(decoder.out_mean.flatten(), encoder.mean.flatten())
            and torch.equal(decoder.out_std.flatten(),
                            encoder.std.flatten())):
        raise _refuse('its decoder output statistics differ from the VFM '
                      "input ones (AutoencoderRAE uses one pair for both)")
    if decoder.grid_size != DIFFUSERS_BASE_GRID:
        raise _refuse(
            f'its latent grid is {decoder.grid_size}x{decoder.grid_size}; '
            "AutoencoderRAE's decoder scales its sin-cos positions by "
            f'{DIFFUSERS_BASE_GRID}/grid on grids other than '
            f'{DIFFUSERS_BASE_GRID}x{DIFFUSERS_BASE_GRID} (RAE and this '
            'package do not), so it would decode differently')
    if decoder.norm.eps != 1e-12:
        raise _refuse(f'its decoder LayerNorm eps is {decoder.norm.eps:g}, '
                      "AutoencoderRAE's is 1e-12")


def diffusers_config(tokenizer: nn.Module) -> dict:
    """``config.json`` of ``tokenizer`` as an ``AutoencoderRAE``."""
    _check_rae_tokenizer(tokenizer)
    encoder, decoder = tokenizer.encoder, tokenizer.decoder
    norm = tokenizer.normalizer
    channels, grid, _ = tokenizer.latent_shapes['patch']
    if bool(norm.enabled):
        mean, std = stats_to_diffusers(norm.patch_mean, norm.patch_var,
                                       norm.eps)
    else:  # identity: (z - 0) / ((1 - 1e-5) + 1e-5)
        mean = torch.zeros(channels, grid, grid)
        std = torch.full((channels, grid, grid), 1 - 1e-5)
    try:
        version = importlib.metadata.version('diffusers')
    except importlib.metadata.PackageNotFoundError:
        version = '0.42.0'
    return {
        '_class_name': CLASS_NAME,
        '_diffusers_version': version,
        'encoder_type': 'dinov2',
        'encoder_hidden_size': int(encoder.embed_dim),
        'encoder_patch_size': int(encoder.patch_size),
        'encoder_num_hidden_layers': int(encoder.num_blocks),
        'decoder_hidden_size': int(decoder.arch['width']),
        'decoder_num_hidden_layers': int(decoder.arch['depth']),
        'decoder_num_attention_heads': int(decoder.arch['num_heads']),
        'decoder_intermediate_size': int(decoder.arch['mlp_dim']),
        'patch_size': int(decoder.patch_size),
        'encoder_input_size': int(encoder.input_size),
        'image_size': int(decoder.patch_size * decoder.grid_size),
        'num_channels': 3,
        'encoder_norm_mean': encoder.mean.flatten().tolist(),
        'encoder_norm_std': encoder.std.flatten().tolist(),
        'latents_mean': mean.tolist(),
        'latents_std': std.tolist(),
        'noise_tau': float(tokenizer.noise_tau),
        'reshape_to_2d': True,
        'use_encoder_loss': False,
        'scaling_factor': 1.0,
    }


def diffusers_state(tokenizer: nn.Module, config: dict
                    ) -> Dict[str, torch.Tensor]:
    """``tokenizer``'s weights in ``AutoencoderRAE``'s layout."""
    encoder = tokenizer.encoder
    vit_state = {k: v.detach().float().cpu()
                 for k, v in encoder.vit.state_dict().items()}
    state = {f'encoder.{k}': v for k, v in dinov2_timm_to_hf(
        vit_state, encoder.patch_size).items()}
    decoder = decoder_rae_to_diffusers(decoder_to_rae(tokenizer.decoder))
    state.update({f'decoder.{k}': v.detach().float().cpu()
                  for k, v in decoder.items()})
    state['encoder_mean'] = encoder.mean.detach().float().cpu().view(
        1, 3, 1, 1)
    state['encoder_std'] = encoder.std.detach().float().cpu().view(
        1, 3, 1, 1)
    state['_latents_mean'] = torch.tensor(config['latents_mean'])
    state['_latents_std'] = torch.tensor(config['latents_std'])
    return {k: v.contiguous() for k, v in state.items()}


def save_diffusers(tokenizer: nn.Module, out_dir: str) -> Dict[str, str]:
    """Write ``tokenizer`` (an RAE tokenizer on timm DINOv2-reg) as an
    ``AutoencoderRAE`` folder; returns the paths written."""
    from safetensors.torch import save_file
    config = diffusers_config(tokenizer)
    state = diffusers_state(tokenizer, config)
    os.makedirs(out_dir, exist_ok=True)
    paths = {'config': osp.join(out_dir, CONFIG_NAME),
             'weights': osp.join(out_dir, WEIGHTS_NAME)}
    save_file(state, paths['weights'] + '.tmp', metadata={'format': 'pt'})
    os.replace(paths['weights'] + '.tmp', paths['weights'])
    with open(paths['config'] + '.tmp', 'w', encoding='utf-8') as f:
        json.dump(config, f, indent=2)
    os.replace(paths['config'] + '.tmp', paths['config'])
    return paths


def export_diffusers(config: str,
                     checkpoint: str,
                     out_dir: str,
                     use_ema: bool = True,
                     latent_stats: Optional[str] = None,
                     cfg_options: Optional[dict] = None) -> Dict[str, str]:
    """Export the RAE tokenizer of a training run as an ``AutoencoderRAE``
    folder.

    Args:
        config: the run's config (stage 1, or stage 2 for its tokenizer).
        checkpoint: its checkpoint.
        out_dir: the folder to write.
        use_ema: the EMA weights (default) or the raw ones.
        latent_stats: statistics file for ``latents_mean`` /
            ``latents_std``; default: the config's ``latent_stats``, else
            the checkpoint's normaliser (identity when it has none).
        cfg_options: config overrides (dotted keys).

    Raises:
        DiffusersFormatError: the tokenizer is not an RAE tokenizer on a
            DINOv2-with-registers VFM (e.g. DecQ).
    """
    from decq_plugin.models.diffusion.samplers import load_frozen_weights
    from .build import _load_config
    from .pretrained import _tokenizer_part
    cfg = _load_config(config, cfg_options)
    tok_cfg, prefix = _tokenizer_part(cfg)
    kind = tok_cfg.get('type')
    if kind != 'RAETokenizer':
        raise _refuse(f'{config!r} builds a {kind}; AutoencoderRAE holds a '
                      'frozen VFM and a patch-only pixel decoder, with no '
                      'place for query latents or condensers')
    latent_stats = latent_stats or tok_cfg.get('latent_stats')
    tok_cfg['encoder']['pretrained'] = False
    tok_cfg['latent_stats'] = None
    tokenizer = MODELS.build(tok_cfg)
    load_frozen_weights(tokenizer, checkpoint, prefix, use_ema)
    if latent_stats:
        tokenizer.normalizer.load(latent_stats)
    return save_diffusers(tokenizer.eval(), out_dir)


__all__ = ['DiffusersFormatError', 'read_diffusers_folder', 'save_diffusers',
           'export_diffusers', 'diffusers_config']
