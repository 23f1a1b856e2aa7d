"""A stage-2 model ready to sample, from a config and a training checkpoint.

    model = load_sampling_model(config_path, checkpoint_path, num_steps=49,
                                guidance_scale=1.5, device='cuda')

Weights: the checkpoint's ``state_dict`` (the EMA weights when training used
``EMAHook``; ``raw_weights=True`` overlays the raw ones from
``ema_state_dict``). Parts the checkpoint holds (the tokenizer and its
latent statistics, an autoguidance guide, a ``decode_with`` decoder) are
taken from it, so the config's separate files for them are not read; parts
it lacks (e.g. the guide of an autoguidance config) are built from the
config's files.
"""
import logging
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from torch import nn

from decq_plugin.engine.checkpoint import (CheckpointFormatError,
                                           StateDictMismatchError,
                                           safe_load_checkpoint)
from .build import _load_config, build_model_from_config


def apply_sampling_options(cfg: Config, num_steps: Optional[int],
                           scale: Optional[float],
                           interval: Optional[Sequence[float]]) -> None:
    """Write the number of ODE steps and the guidance scale / interval into
    ``cfg.model``, in place (``None``: the config's own)."""
    model = cfg.model
    if num_steps is not None:
        model.sampler['num_points'] = num_steps + 1
    if scale is None and interval is None:
        return
    guidance = model.get('guidance')
    if guidance is None:
        if scale is None:
            raise ValueError('--guidance-interval needs guidance: give '
                             '--guidance-scale or a config with guidance')
        guidance = dict(type='ClassifierFreeGuidance')
    guidance = dict(guidance)
    if scale is not None:
        guidance['scale'] = scale
    if interval is not None:
        guidance['interval'] = tuple(interval)
    model['guidance'] = guidance


def read_checkpoint_state(path: str, raw: bool = False
                          ) -> Dict[str, torch.Tensor]:
    """The model state dict of a training checkpoint (``state_dict``; with
    ``raw``, overlaid by the ``module.*`` entries of ``ema_state_dict``)."""
    checkpoint = safe_load_checkpoint(path)
    state = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state, dict) or not state or not all(
            torch.is_tensor(v) for v in state.values()):
        raise CheckpointFormatError(
            f'{path!r} holds no state dict of tensors (top-level keys: '
            f'{sorted(map(str, checkpoint))[:20]})')
    state = dict(state)
    if raw:
        ema = checkpoint.get('ema_state_dict')
        if not isinstance(ema, dict):
            raise CheckpointFormatError(
                f'--raw-weights: {path!r} has no ema_state_dict (was the '
                'model trained without EMAHook? then drop --raw-weights)')
        state.update({k[len('module.'):]: v for k, v in ema.items()
                      if k.startswith('module.')})
    return state


def _holds(state: Dict[str, torch.Tensor], prefix: str) -> bool:
    return any(k.startswith(prefix + '.') for k in state)


def _weights_from_checkpoint(tokenizer_cfg) -> None:
    """No statistics file and no VFM download for a tokenizer whose
    weights (normaliser buffers included) come from the checkpoint."""
    tokenizer_cfg['latent_stats'] = None
    encoder = tokenizer_cfg.get('encoder')
    if isinstance(encoder, dict) and encoder.get('pretrained'):
        encoder['pretrained'] = False


def use_checkpoint_parts(model_cfg, state: Dict[str, torch.Tensor]
                         ) -> List[str]:
    """Clear the config's file entries of the parts that ``state`` holds
    (their weights come from the checkpoint); return the prefixes of the
    parts built from the config's own files instead."""
    from_files = []
    if _holds(state, 'tokenizer'):
        model_cfg['tokenizer_ckpt'] = None
        _weights_from_checkpoint(model_cfg['tokenizer'])
    elif model_cfg.get('tokenizer_ckpt'):
        from_files.append('tokenizer')
    guidance = model_cfg.get('guidance')
    if guidance is not None and 'guide_ckpt' in guidance:
        if _holds(state, 'guidance'):
            guidance['guide_ckpt'] = None
        elif guidance['guide_ckpt']:
            from_files.append('guidance')
    decode_with = model_cfg.get('decode_with')
    if decode_with is not None:
        if _holds(state, 'rae_decoder'):
            decode_with['ckpt'] = None
            _weights_from_checkpoint(decode_with['tokenizer'])
        elif decode_with.get('ckpt'):
            from_files.append('rae_decoder')
    return from_files


def load_sampling_weights(model: nn.Module, state: Dict[str, torch.Tensor],
                          from_files: Sequence[str], path: str) -> None:
    """Load ``state`` into ``model``. Every key must be there except those
    of the parts in ``from_files``; a guide the model lacks is ignored."""
    own = model.state_dict()
    skip = tuple(p + '.' for p in from_files)
    missing = [k for k in own if k not in state and not k.startswith(skip)]
    unexpected = [k for k in state if k not in own]
    ignored = [k for k in unexpected if k.startswith('guidance.')]
    unexpected = [k for k in unexpected if k not in ignored]
    shapes = [f'{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}'
              for k, v in own.items() if k in state
              and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise StateDictMismatchError(
            f'{path!r} does not fit the model of the config: missing '
            f'{missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} '
            f'({len(unexpected)}), shapes {shapes[:5]}')
    if ignored:
        print_log(f'{path!r}: {len(ignored)} guidance weights ignored (the '
                  'config samples without that guide)', logger='current',
                  level=logging.WARNING)
    model.load_state_dict({k: v for k, v in state.items() if k in own},
                          strict=False)


def load_sampling_model(config: Union[str, Config], checkpoint: str, *,
                        num_steps: Optional[int] = None,
                        guidance_scale: Optional[float] = None,
                        guidance_interval: Optional[Sequence[float]] = None,
                        raw_weights: bool = False,
                        cfg_options: Optional[dict] = None,
                        device: Union[str, torch.device] = 'cpu'
                        ) -> nn.Module:
    """The stage-2 model of ``config`` with the weights of the training
    checkpoint ``checkpoint``, in eval mode on ``device``.

    Args:
        config: config path or loaded ``Config`` (edited in place).
        checkpoint: training checkpoint (``state_dict`` [+ EMA]).
        num_steps: ODE steps (time points - 1); default the config's.
        guidance_scale: scale of the config's guidance (classifier-free
            guidance is added when the config has none).
        guidance_interval: ``(t_min, t_max)`` of the guidance.
        raw_weights: the raw (non-EMA) weights of ``ema_state_dict``.
        cfg_options: overrides merged into the config first.
        device: where the model goes (it is built on the CPU).
    """
    cfg = _load_config(config, cfg_options)
    apply_sampling_options(cfg, num_steps, guidance_scale, guidance_interval)
    state = read_checkpoint_state(checkpoint, raw_weights)
    from_files = use_checkpoint_parts(cfg.model, state)
    model = build_model_from_config(cfg, None, device='cpu')
    load_sampling_weights(model, state, from_files, checkpoint)
    del state
    return model.to(device).eval()
