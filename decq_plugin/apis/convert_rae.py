"""Start from RAE's released weights: fill the model of a config with a
pixel decoder, latent statistics and DiT-DH files of the public RAE code,
and save it as a checkpoint of this package.

The config says the architecture (e.g. ``configs/rae/...`` for a tokenizer,
``configs/ldm/ldm_dit-dh-xl_rae-...`` for stage 2); every RAE file must
fit it exactly. What no RAE file holds keeps the config's own weights: the
frozen VFM is loaded as the config's encoder loads it (timm hub name or
``weights_path``), other parts keep their initialisation. The checkpoint
(``{'state_dict': ..., 'meta': ...}``, plain tensors and strings) loads
with ``tools/test.py``, ``tools/sample.py``, a config's ``tokenizer_ckpt``
/ ``guide_ckpt`` and :func:`decq_plugin.apis.build_tokenizer_from_config`.
"""
import os
import os.path as osp
import pickle
from typing import Dict, Optional, Union

import torch
from mmengine.config import Config
from torch import nn

from decq_plugin.models.rae_layout import (DECODER_KIND, DIT_KIND,
                                           STATS_KIND, RAELayoutError,
                                           decoder_from_rae, ditdh_from_rae,
                                           recognise, unwrap_state)
from decq_plugin.registry import MODELS
from .build import _load_config

PathOrNone = Optional[str]


def read_rae_file(path: str, use_ema: bool = True) -> Dict[str, torch.Tensor]:
    """The flat state of an RAE weight file (``.safetensors`` or a torch
    file, read with ``weights_only=True``); see
    :func:`~decq_plugin.models.rae_layout.unwrap_state`."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'RAE file not found: {path!r}')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        obj = load_file(path, device='cpu')
    else:
        try:
            obj = torch.load(path, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError as err:
            raise RAELayoutError(
                f'{path!r} cannot be read as plain tensors (torch.load with '
                f'weights_only=True refused it: {err}); it is not a weight '
                'file of the RAE code') from err
    return unwrap_state(obj, source=repr(path), use_ema=use_ema)


def _expect(path: str, kind: str, use_ema: bool) -> Dict[str, torch.Tensor]:
    state = read_rae_file(path, use_ema)
    found = recognise(state, repr(path))
    if found != kind:
        raise RAELayoutError(f'{path!r} is an RAE {found} file, given as the '
                             f'{kind} file')
    return state


def _tokenizer_of(model: nn.Module) -> Optional[nn.Module]:
    if hasattr(model, 'encode') and hasattr(model, 'decode') and hasattr(
            model, 'normalizer'):
        return model
    return getattr(model, 'tokenizer', None)


def _patch_tokenizer(model: nn.Module) -> nn.Module:
    """Where RAE's decoder and statistics go: the tokenizer when it makes
    patch latents only, else the RAE tokenizer of ``decode_with``."""
    tokenizer = _tokenizer_of(model)
    if tokenizer is not None and not getattr(tokenizer, 'num_queries', 0):
        return tokenizer
    rae = getattr(model, 'rae_decoder', None)
    if rae is None:
        raise RAELayoutError(
            'the config builds no patch-only tokenizer (RAE) for the RAE '
            'decoder / statistics files; use an RAE config, or a DecQ config '
            'with decode_with')
    return rae


def _prepare_config(cfg: Config, pretrained_vfm: bool) -> None:
    """Point every file entry of the model config away (the weights come
    from the RAE files or the VFM's own source)."""
    model = cfg.model
    tokenizers = [model.get('tokenizer', model)]
    if model.get('decode_with'):
        model.decode_with['ckpt'] = None
        tokenizers.append(model.decode_with['tokenizer'])
    for tok in tokenizers:
        if 'latent_stats' in tok:
            tok['latent_stats'] = None
        if isinstance(tok.get('encoder'), dict):
            tok.encoder['pretrained'] = pretrained_vfm
    if 'tokenizer_ckpt' in model:
        model['tokenizer_ckpt'] = None
    guidance = model.get('guidance')
    if isinstance(guidance, dict) and 'guide_ckpt' in guidance:
        guidance['guide_ckpt'] = None


def convert_rae_checkpoint(config: Union[str, Config],
                           out: str,
                           decoder: PathOrNone = None,
                           stats: PathOrNone = None,
                           dit: PathOrNone = None,
                           guide: PathOrNone = None,
                           pretrained_vfm: bool = True,
                           use_ema: bool = True,
                           cfg_options: Optional[dict] = None) -> dict:
    """Build ``config``'s model, fill it from RAE files and save it.

    Args:
        config: a stage-1 (tokenizer) or stage-2 config.
        out: the checkpoint to write.
        decoder: RAE pixel decoder file (``GeneralDecoder`` state dict);
            fills the tokenizer's decoder, or with ``decode_with`` ("DecQ
            (RAE decoder)") the RAE decoder used for decoding.
        stats: RAE latent statistics file (``mean`` / ``var``); fills the
            tokenizer's normaliser (patch statistics).
        dit: RAE DiT-DH file (``DiTwDDTHead``); fills ``model.denoiser``.
        guide: RAE DiT-DH file of an autoguidance guide; fills
            ``model.guidance.guide``.
        pretrained_vfm: load the VFM's pretrained weights as the encoder
            config says (False: random VFM, for tests).
        use_ema: take ``'ema'`` (else ``'model'``) from training
            checkpoints that hold both.
        cfg_options: overrides of the config.

    Returns:
        ``{'out': out, 'filled': {part: file}}``.

    Raises:
        RAELayoutError: a file is not in a known RAE layout (the message
            names the keys), or does not fit the config's model.
    """
    if not any((decoder, stats, dit, guide)):
        raise ValueError('give at least one RAE file (decoder, stats, dit, '
                         'guide)')
    cfg = _load_config(config, cfg_options)
    _prepare_config(cfg, pretrained_vfm)
    model = MODELS.build(cfg.model)
    filled: Dict[str, str] = {}

    if decoder is not None:
        state = _expect(decoder, DECODER_KIND, use_ema)
        target = _patch_tokenizer(model)
        target.decoder.load_state_dict(
            decoder_from_rae(state, target.decoder, repr(decoder)))
        filled['decoder'] = decoder
    if stats is not None:
        state = _expect(stats, STATS_KIND, use_ema)
        target = _patch_tokenizer(model)
        target.normalizer.set_stats(state, source=repr(stats))
        filled['stats'] = stats
    for path, attr in ((dit, 'denoiser'), (guide, 'guidance.guide')):
        if path is None:
            continue
        target = model
        for name in attr.split('.'):
            target = getattr(target, name, None)
        if target is None:
            raise RAELayoutError(f'the config builds no {attr} for {path!r}')
        state = _expect(path, DIT_KIND, use_ema)
        target.load_state_dict(ditdh_from_rae(state, target, repr(path)))
        filled[attr] = path

    folder = osp.dirname(osp.abspath(out))
    os.makedirs(folder, exist_ok=True)
    meta = {'converted_from_rae': {k: osp.basename(v)
                                   for k, v in filled.items()}}
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = out + '.tmp'
    torch.save({'state_dict': state_dict, 'meta': meta}, tmp)
    os.replace(tmp, out)
    return {'out': out, 'filled': filled}
