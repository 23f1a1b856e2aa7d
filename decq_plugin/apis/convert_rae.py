"""Start from RAE's released weights: fill the model of a config with a
pixel decoder, latent statistics and DiT-DH files of the public RAE code,
and save it as a checkpoint of this package.

The config says the architecture (e.g. ``configs/rae/...`` for a tokenizer,
``configs/ldm/ldm_dit-dh-xl_rae-...`` for stage 2); every RAE file must
fit it exactly. Every file is read and recognised before any model is
built, and only what the output needs is built: the tokenizer (its frozen
VFM loaded as the config's encoder loads it: timm hub name or
``weights_path``) for a decoder or statistics file, the DiT-DH for a DiT
file; a stage-1 model's training-only parts (LPIPS, discriminator) never.
The checkpoint (``{'state_dict': ..., 'meta': ...}``, plain tensors and
strings) holds the parts filled: ``tokenizer.*`` (or the whole tokenizer of
a tokenizer config, or ``rae_decoder.*``), ``denoiser.*``,
``guidance.guide.*``. It loads with ``tools/sample.py`` (parts it lacks
come from the config's files), a config's ``tokenizer_ckpt`` /
``guide_ckpt``, :func:`decq_plugin.apis.build_tokenizer_from_config` and,
for a stage-1 config, ``tools/test.py`` with ``--cfg-options
model.perceptual_loss=None model.discriminator=None``.
"""
import os
import os.path as osp
import pickle
import zipfile
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from mmengine.config import Config
from torch import nn

from decq_plugin.models.rae_layout import (DECODER_KIND, DIT_KIND,
                                           STATS_KIND, RAELayoutError,
                                           decoder_from_rae, ditdh_from_rae,
                                           recognise, unwrap_state_taken)
from decq_plugin.models.tokenizers.normalization import LatentStatsError
from decq_plugin.registry import MODELS
from .build import _load_config

PathOrNone = Optional[str]
State = Dict[str, torch.Tensor]
#: Parts of a stage-1 model that only training uses.
TRAINING_ONLY = ('perceptual_loss', 'discriminator', 'diffaug')


def _unreadable(path: str, err: BaseException) -> RAELayoutError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else ''
    return RAELayoutError(
        f'{path!r} cannot be read: it is truncated or damaged, or not a '
        f'torch / safetensors weight file ({type(err).__name__}: '
        f'{first[:200]}); download or write it again')


def read_rae_file_taken(path: str, use_ema: bool = True
                        ) -> Tuple[Dict[str, torch.Tensor], str]:
    """The flat state of an RAE weight file (``.safetensors`` or a torch
    file, read with ``weights_only=True``) and which weights were taken;
    see :func:`~decq_plugin.models.rae_layout.unwrap_state_taken`."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'RAE file not found: {path!r}')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        try:
            obj = load_file(path, device='cpu')
        except Exception as err:  # SafetensorError, OSError
            raise _unreadable(path, err) from None
    else:
        try:
            obj = torch.load(path, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError as err:
            if 'truncated' in str(err):
                raise _unreadable(path, err) from None
            raise RAELayoutError(
                f'{path!r} cannot be read as plain tensors (torch.load with '
                f'weights_only=True refused it: {err}); it is not a weight '
                'file of the RAE code') from err
        except (RuntimeError, EOFError, ValueError, OSError,
                zipfile.BadZipFile) as err:
            raise _unreadable(path, err) from None
    return unwrap_state_taken(obj, source=repr(path), use_ema=use_ema)


def read_rae_file(path: str, use_ema: bool = True) -> Dict[str, torch.Tensor]:
    """The flat state of an RAE weight file (see
    :func:`read_rae_file_taken`)."""
    return read_rae_file_taken(path, use_ema)[0]


def _expect(path: str, kind: str, use_ema: bool) -> Tuple[State, str]:
    state, taken = read_rae_file_taken(path, use_ema)
    found = recognise(state, repr(path))
    if found != kind:
        raise RAELayoutError(f'{path!r} is an RAE {found} file, given as the '
                             f'{kind} file')
    return state, taken


def _tokenizer_of(model: nn.Module) -> Optional[nn.Module]:
    if hasattr(model, 'encode') and hasattr(model, 'decode') and hasattr(
            model, 'normalizer'):
        return model
    return getattr(model, 'tokenizer', None)


def patch_tokenizer(model: nn.Module) -> nn.Module:
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
    from the RAE files or the VFM's own source) and drop what conversion
    never uses (a stage-1 model's LPIPS, discriminator and DiffAug)."""
    model = cfg.model
    if 'tokenizer' in model:
        for name in TRAINING_ONLY:
            if name in model:
                model[name] = None
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


def _prefix_of(model: nn.Module, part: nn.Module) -> str:
    """``part``'s key prefix in ``model.state_dict()`` ('' for the model)."""
    for name, module in model.named_modules():
        if module is part:
            return name + '.' if name else ''
    raise RAELayoutError(f'{type(part).__name__} is not part of the model')


def _attr(model: nn.Module, dotted: str) -> Optional[nn.Module]:
    target = model
    for name in dotted.split('.'):
        target = getattr(target, name, None)
    return target


def convert_rae_checkpoint(
        config: Union[str, Config],
        out: str,
        decoder: PathOrNone = None,
        stats: PathOrNone = None,
        dit: PathOrNone = None,
        guide: PathOrNone = None,
        pretrained_vfm: bool = True,
        use_ema: bool = True,
        cfg_options: Optional[dict] = None,
        fill_model: Optional[Callable[[nn.Module], None]] = None) -> dict:
    """Fill ``config``'s model from RAE files and save the parts filled.

    Args:
        config: a stage-1 (tokenizer) or stage-2 config.
        out: the checkpoint to write.
        decoder: RAE pixel decoder file (``GeneralDecoder`` state dict, in
            float32/16 or bfloat16, or an RAE stage-1 training checkpoint);
            fills the tokenizer's decoder, or with ``decode_with`` ("DecQ
            (RAE decoder)") the RAE decoder used for decoding.
        stats: latent statistics file (RAE's ``mean`` / ``var`` or this
            package's ``patch_mean`` / ``patch_var``); fills the tokenizer's
            normaliser (patch statistics).
        dit: RAE DiT-DH file (``DiTwDDTHead``); fills ``model.denoiser``.
        guide: RAE DiT-DH file of an autoguidance guide; fills
            ``model.guidance.guide``.
        pretrained_vfm: load the VFM's pretrained weights as the encoder
            config says (False: random VFM, for tests). Only a decoder or
            statistics file makes the tokenizer part of the output; without
            one the VFM is not loaded at all.
        use_ema: take ``'ema'`` (else ``'model'``) from training
            checkpoints that hold both.
        cfg_options: overrides of the config.
        fill_model: called with the built model before the RAE files
            fill it (e.g. to load VFM weights from another source).

    Returns:
        ``{'out': out, 'filled': {part: file}, 'weights': {part: which
        weights of the file were taken}, 'saved': [key prefixes]}``.

    Raises:
        FileNotFoundError: a file is missing.
        RAELayoutError: a file cannot be read, is not in a known RAE layout
            (the message names the keys), or does not fit the config's model.
    """
    parts = (('decoder', decoder, DECODER_KIND), ('stats', stats, STATS_KIND),
             ('denoiser', dit, DIT_KIND), ('guidance.guide', guide, DIT_KIND))
    if not any(path for _, path, _ in parts):
        raise ValueError('give at least one RAE file (decoder, stats, dit, '
                         'guide)')
    # Every file is read and recognised before any model is built.
    states: Dict[str, Tuple[str, State]] = {}
    weights: Dict[str, str] = {}
    for part, path, kind in parts:
        if path is not None:
            state, weights[part] = _expect(path, kind, use_ema)
            states[part] = (path, state)
    needs_tokenizer = decoder is not None or stats is not None
    cfg = _load_config(config, cfg_options)
    _prepare_config(cfg, pretrained_vfm and needs_tokenizer)
    model = MODELS.build(cfg.model)
    if fill_model is not None:
        fill_model(model)
    filled: Dict[str, str] = {}
    saved: List[str] = []

    if needs_tokenizer:
        target = patch_tokenizer(model)
        saved.append(_prefix_of(model, target))
    if 'decoder' in states:
        path, state = states['decoder']
        target.decoder.load_state_dict(
            decoder_from_rae(state, target.decoder, repr(path)))
        filled['decoder'] = path
    if 'stats' in states:
        path, state = states['stats']
        try:
            target.normalizer.set_stats(state, source=repr(path))
        except LatentStatsError as err:
            raise RAELayoutError(
                f'{err}: the statistics file does not fit the latents of '
                'this config; give the statistics of this tokenizer\'s VFM '
                'and resolution') from None
        filled['stats'] = path
    for attr in ('denoiser', 'guidance.guide'):
        if attr not in states:
            continue
        path, state = states[attr]
        target = _attr(model, attr)
        if target is None:
            raise RAELayoutError(f'the config builds no {attr} for {path!r}')
        target.load_state_dict(ditdh_from_rae(state, target, repr(path)))
        filled[attr] = path
        saved.append(attr + '.')

    folder = osp.dirname(osp.abspath(out))
    os.makedirs(folder, exist_ok=True)
    meta = {'converted_from_rae': {k: osp.basename(v)
                                   for k, v in filled.items()},
            'rae_weights_taken': dict(weights)}
    state_dict = {k: v.detach().cpu()
                  for k, v in model.state_dict().items()
                  if any(k.startswith(p) for p in saved)}
    tmp = out + '.tmp'
    torch.save({'state_dict': state_dict, 'meta': meta}, tmp)
    os.replace(tmp, out)
    return {'out': out, 'filled': filled, 'weights': weights,
            'saved': [p.rstrip('.') or '<the whole model>' for p in saved]}
