"""Start from a diffusers ``AutoencoderRAE`` folder (RAE's Hub weights,
e.g. ``nyu-visionx/RAE-dinov2-wReg-base-ViTXL-n08``): write the files this
package's configs load, and a tokenizer checkpoint.

:func:`import_diffusers_rae` writes, beside each other:

* ``vfm.safetensors``: the DINOv2-with-registers VFM in timm's layout at the
  folder's encoder input size (a config's
  ``model.tokenizer.encoder.weights_path``);
* ``rae_decoder.safetensors``: the pixel decoder in RAE's
  ``GeneralDecoder`` layout (``--decoder`` of
  ``tools/convert_rae_checkpoint.py``);
* ``latent_stats.pth``: ``patch_mean`` / ``patch_var`` such that this
  package's ``(z - mean) / sqrt(var + 1e-5)`` equals diffusers'
  ``(z - mean) / (std + 1e-5) * scaling_factor`` (a config's
  ``latent_stats``).

The decoder's fixed sin-cos table is RAE's (and this package's); diffusers
computes the same table on a 16x16 latent grid (RAE at 256 px) and a
rescaled one on other grids, where diffusers' decoding differs from RAE's.

:func:`convert_diffusers_rae` then fills a config's tokenizer (VFM, decoder,
statistics; a stage-2 config's DiT-DH from RAE files too) and saves it as
:func:`~decq_plugin.apis.convert_rae.convert_rae_checkpoint` does.
"""
import os
import os.path as osp
from typing import Callable, Dict, Optional, Union

import torch
from mmengine.config import Config
from torch import nn

from decq_plugin.models.diffusers_layout import (decoder_diffusers_to_rae,
                                                 dinov2_hf_to_timm,
                                                 stats_from_diffusers)
from decq_plugin.models.rae_layout import (DECODER_KIND, RAELayoutError,
                                           fit_state, recognise)
from .convert_rae import convert_rae_checkpoint, patch_tokenizer
from .diffusers_format import (WEIGHTS_NAME, DiffusersFormatError,
                               read_diffusers_folder)

PathOrNone = Optional[str]
_BUFFERS = ('_latents_mean', '_latents_std', 'encoder_mean', 'encoder_std')


def _stats_tensor(value: torch.Tensor, shape: tuple, name: str,
                  source: str) -> torch.Tensor:
    """``value`` (any leading 1 dims, or broadcastable) as ``shape``."""
    while value.dim() > len(shape) and value.shape[0] == 1:
        value = value[0]
    try:
        return torch.broadcast_to(value.float(), shape).clone()
    except RuntimeError:
        raise DiffusersFormatError(
            f'{source}: {name} has shape {tuple(value.shape)}, the latents '
            f'are {shape} (C, h, w)') from None


def _latent_stat(state: Dict[str, torch.Tensor], config: dict,
                 name: str) -> torch.Tensor:
    """``_latents_{name}`` of the weights, else ``latents_{name}`` of the
    config, else AutoencoderRAE's default (0 / 1)."""
    if f'_latents_{name}' in state:
        return state[f'_latents_{name}']
    if config.get(f'latents_{name}') is not None:
        return torch.tensor(config[f'latents_{name}'], dtype=torch.float32)
    return torch.zeros(1) if name == 'mean' else torch.ones(1)


def import_diffusers_rae(folder: str, out_dir: str) -> Dict[str, object]:
    """Write the VFM, decoder and statistics of an ``AutoencoderRAE``
    folder as this package's files (see the module docstring).

    Returns:
        ``{'vfm': path, 'decoder': path, 'stats': path, 'config': the
        folder's AutoencoderRAE config}``.
    """
    from safetensors.torch import save_file
    config, state = read_diffusers_folder(folder)
    source = repr(osp.join(folder, WEIGHTS_NAME))
    patch = int(config['encoder_patch_size'])
    if config['encoder_input_size'] % patch:
        raise DiffusersFormatError(
            f'{folder!r}: encoder_input_size={config["encoder_input_size"]} '
            f'is not a multiple of encoder_patch_size={patch}')
    grid = config['encoder_input_size'] // patch
    unknown = [k for k in state if not k.startswith(
        ('encoder.', 'decoder.')) and k not in _BUFFERS]
    if unknown:
        raise DiffusersFormatError(f'{source} has entries that are not part '
                                   f'of an AutoencoderRAE: {unknown[:8]}')
    encoder = {k[len('encoder.'):]: v for k, v in state.items()
               if k.startswith('encoder.')}
    vfm = dinov2_hf_to_timm(encoder, grid, source)
    # decoder.decoder_pos_embed, when a folder stores it, is checked
    # against this package's table as RAE's files are.
    decoder = decoder_diffusers_to_rae({
        k[len('decoder.'):]: v for k, v in state.items()
        if k.startswith('decoder.')})
    if recognise(decoder, source + ' (decoder.*)') != DECODER_KIND:
        raise DiffusersFormatError(f'{source} holds no pixel decoder')
    channels = vfm['cls_token'].shape[-1]
    shape = (channels, grid, grid)
    mean = _stats_tensor(_latent_stat(state, config, 'mean'), shape,
                         'latents_mean', source)
    std = _stats_tensor(_latent_stat(state, config, 'std'), shape,
                        'latents_std', source)
    try:
        patch_mean, patch_var = stats_from_diffusers(
            mean, std, float(config['scaling_factor']))
    except RAELayoutError as err:
        raise DiffusersFormatError(f'{source}: {err}') from None

    os.makedirs(out_dir, exist_ok=True)
    paths = {'vfm': osp.join(out_dir, 'vfm.safetensors'),
             'decoder': osp.join(out_dir, 'rae_decoder.safetensors'),
             'stats': osp.join(out_dir, 'latent_stats.pth')}
    for key, tensors in (('vfm', vfm), ('decoder', decoder)):
        save_file({k: v.contiguous() for k, v in tensors.items()},
                  paths[key] + '.tmp', metadata={'format': 'pt'})
        os.replace(paths[key] + '.tmp', paths[key])
    torch.save({'patch_mean': patch_mean, 'patch_var': patch_var},
               paths['stats'] + '.tmp')
    os.replace(paths['stats'] + '.tmp', paths['stats'])
    return dict(paths, config=config)


def _vfm_filler(vfm_path: str,
                config: dict) -> Callable[[nn.Module], None]:
    """A ``fill_model`` that loads the converted VFM into the tokenizer and
    checks the encoder settings the checkpoint cannot carry."""
    from safetensors.torch import load_file

    def fill(model: nn.Module) -> None:
        encoder = patch_tokenizer(model).encoder
        vit = getattr(encoder, 'vit', None)
        if vit is None:
            raise DiffusersFormatError(
                f'the config\'s encoder is a {type(encoder).__name__}; a '
                "diffusers 'dinov2' folder fills a TimmViTEncoder of "
                "'vit_*_patch14_reg4_dinov2'")
        if encoder.input_size != config['encoder_input_size']:
            raise DiffusersFormatError(
                f'the config\'s VFM input is {encoder.input_size} px, the '
                f"folder's encoder_input_size is "
                f"{config['encoder_input_size']}: use a config of that size")
        for name in ('mean', 'std'):
            want = torch.tensor(config[f'encoder_norm_{name}'])
            if not torch.allclose(getattr(encoder, name).flatten(), want,
                                  atol=1e-6):
                raise DiffusersFormatError(
                    f"the folder's encoder_norm_{name} is {want.tolist()}, "
                    f"the config's VFM uses "
                    f'{getattr(encoder, name).flatten().tolist()}: set '
                    f'model.tokenizer.encoder.{name}={want.tolist()}')
        state = {k: v for k, v in load_file(vfm_path).items()
                 if not k.startswith('norm.')}
        vit.load_state_dict(fit_state(vit, state, repr(vfm_path)))

    return fill


def convert_diffusers_rae(config: Union[str, Config],
                          folder: str,
                          out: str,
                          dit: PathOrNone = None,
                          guide: PathOrNone = None,
                          use_ema: bool = True,
                          cfg_options: Optional[dict] = None) -> dict:
    """Fill ``config``'s RAE tokenizer from an ``AutoencoderRAE`` folder
    (and its DiT-DH / guide from RAE files) and save the checkpoint
    ``out``; the folder's files, converted, are written beside ``out``.

    Returns:
        :func:`convert_rae_checkpoint`'s result plus ``'files'``: the paths
        :func:`import_diffusers_rae` wrote.
    """
    for path in (dit, guide):  # before anything is converted or written
        if path is not None and not osp.isfile(path):
            raise FileNotFoundError(f'RAE file not found: {path!r}')
    files = import_diffusers_rae(folder, osp.dirname(osp.abspath(out)))
    result = convert_rae_checkpoint(
        config, out, decoder=files['decoder'], stats=files['stats'],
        dit=dit, guide=guide, pretrained_vfm=False, use_ema=use_ema,
        cfg_options=cfg_options,
        fill_model=_vfm_filler(files['vfm'], files['config']))
    result['files'] = {k: v for k, v in files.items() if k != 'config'}
    result['filled']['vfm'] = folder
    return result
