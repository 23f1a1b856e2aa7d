"""Build trained models from a config and a checkpoint, safely."""
from typing import Optional, Union

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn

from decq_plugin.registry import MODELS, SCOPE


def _load_config(config: Union[str, Config],
                 cfg_options: Optional[dict] = None) -> Config:
    if isinstance(config, str):
        from decq_plugin.utils.launch import load_config
        config = load_config(config, cfg_options)
    elif cfg_options:
        config.merge_from_dict(cfg_options)
    init_default_scope(config.get('default_scope', SCOPE))
    return config


def build_model_from_config(config: Union[str, Config],
                            checkpoint: Optional[str] = None,
                            cfg_options: Optional[dict] = None,
                            device: Union[str, torch.device] = 'cpu',
                            key: Optional[str] = None) -> nn.Module:
    """``cfg.model`` built, weights loaded from ``checkpoint`` (the EMA
    weights when the run used EMA: MMEngine saves them as ``state_dict``),
    in eval mode on ``device``."""
    from decq_plugin.engine.checkpoint import load_model_weights
    cfg = _load_config(config, cfg_options)
    model = MODELS.build(cfg.model)
    if checkpoint:
        load_model_weights(model, checkpoint, key=key)
    return model.to(device).eval()


def build_tokenizer_from_config(config: Union[str, Config],
                                checkpoint: Optional[str] = None,
                                cfg_options: Optional[dict] = None,
                                device: Union[str, torch.device] = 'cpu',
                                key: Optional[str] = None) -> nn.Module:
    """The tokenizer of a config, with weights from ``checkpoint``.

    ``cfg.model`` may be a stage-1 ``AutoencoderModel``, a stage-2 model
    holding a ``tokenizer``, or a tokenizer itself; checkpoint keys are
    taken under ``tokenizer.`` when the model nests it.
    """
    from decq_plugin.engine.checkpoint import load_model_weights
    cfg = _load_config(config, cfg_options)
    model_cfg = cfg.model
    nested = 'tokenizer' in model_cfg
    tok_cfg = model_cfg.tokenizer if nested else model_cfg
    if checkpoint and 'encoder' in tok_cfg:
        # The VFM weights come from the checkpoint: nothing to download.
        tok_cfg.encoder.pretrained = False
    tokenizer = MODELS.build(tok_cfg)
    if not hasattr(tokenizer, 'encode') or not hasattr(tokenizer, 'decode'):
        raise TypeError(f'{type(tokenizer).__name__} from the config is not '
                        'a tokenizer (it has no encode/decode)')
    if checkpoint:
        load_model_weights(tokenizer, checkpoint, key=key,
                           prefix='tokenizer' if nested else '')
        # A stats file named by the config wins over the checkpoint's
        # normaliser buffers (stage-1 checkpoints carry empty ones).
        if tok_cfg.get('latent_stats'):
            tokenizer.normalizer.load(tok_cfg.latent_stats)
    return tokenizer.to(device).eval()
