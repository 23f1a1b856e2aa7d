"""Adapter for timm Vision Transformers (default: DINOv2-B/14 with registers).

Any timm ViT with ``blocks``, ``patch_embed`` and ``_pos_embed`` fits, tagged
(``'vit_base_patch16_224.mae'``) or not. What differs between VFMs is read
from the model, not configured: the prefix tokens (DINOv2-reg: CLS + 4
registers; MAE, CLIP: CLS; SigLIP: none, it pools with a MAP head, which is
dropped), CLIP's pre-norm (``norm_pre``, kept: it is part of the trunk), the
patch size and, unless given, the input mean/std of the pretrained weights.
"""
import os
from typing import Optional, Sequence

import torch
from torch import nn

from decq_plugin.registry import MODELS
from .base import (IMAGENET_MEAN, IMAGENET_STD, MissingPretrainedWeightsError,
                   VFMEncoder)
from .timm_names import check_timm_name


def _pretrained_source(model: nn.Module, model_name: str) -> str:
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    hub = cfg.get('hf_hub_id')
    return (f"the Hugging Face repo '{hub}' (file model.safetensors)"
            if hub else cfg.get('url') or f"timm's weights for '{model_name}'")


@MODELS.register_module()
class TimmViTEncoder(VFMEncoder):
    """A frozen timm ViT used as the tokenizer encoder.

    Args:
        model_name: timm model name, tagged or not, e.g.
            ``'vit_base_patch14_reg4_dinov2'``,
            ``'vit_base_patch16_siglip_256.v2_webli'``,
            ``'vit_base_patch16_224.mae'``.
        input_size: VFM input side (224 gives a 16x16 grid at patch 14).
        pretrained: load pretrained weights (from ``weights_path`` when
            given, else timm's download).
        weights_path: local weights file (``.safetensors`` / ``.pth``); used
            through timm's ``pretrained_cfg_overlay=dict(file=...)``.
        frozen: see :class:`VFMEncoder`.
        model_kwargs: extra arguments for ``timm.create_model`` (tests use
            them to build tiny ViTs: ``depth``, ``embed_dim``, ...).
        mean, std: input normalisation; ``None`` takes those of the
            pretrained weights (timm's ``pretrained_cfg``: ImageNet for
            DINOv2 and MAE, 0.5 for SigLIP, OpenAI's for CLIP).
        antialias: anti-alias the bicubic resize.
    """

    def __init__(self,
                 model_name: str = 'vit_base_patch14_reg4_dinov2',
                 input_size: int = 224,
                 pretrained: bool = True,
                 weights_path: Optional[str] = None,
                 frozen: bool = True,
                 model_kwargs: Optional[dict] = None,
                 mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None,
                 antialias: bool = False) -> None:
        import timm
        check_timm_name(model_name, type(self).__name__)
        kwargs = dict(model_kwargs or {})
        kwargs.setdefault('img_size', input_size)
        kwargs.setdefault('num_classes', 0)
        if pretrained and weights_path is not None:
            if not os.path.isfile(weights_path):
                raise MissingPretrainedWeightsError(
                    f"weights_path='{weights_path}' does not exist: put the "
                    f"pretrained weights of '{model_name}' there")
            kwargs['pretrained_cfg_overlay'] = dict(file=weights_path)
        try:
            vit = timm.create_model(model_name, pretrained=pretrained, **kwargs)
        except MissingPretrainedWeightsError:
            raise
        except Exception as err:  # offline download failures
            if not pretrained:
                raise
            probe = timm.create_model(model_name, pretrained=False, **kwargs)
            raise MissingPretrainedWeightsError(
                f"could not load pretrained weights for '{model_name}' "
                f'({type(err).__name__}: {err}). Download them from '
                f'{_pretrained_source(probe, model_name)} and pass the file '
                'as weights_path=... (config key '
                'model.tokenizer.encoder.weights_path), or set '
                'pretrained=False for random weights.') from err
        patch = vit.patch_embed.patch_size
        patch = patch[0] if isinstance(patch, (tuple, list)) else patch
        pretrained_cfg = getattr(vit, 'pretrained_cfg', None) or {}
        mean = mean or pretrained_cfg.get('mean', IMAGENET_MEAN)
        std = std or pretrained_cfg.get('std', IMAGENET_STD)
        super().__init__(
            input_size=input_size,
            patch_size=patch,
            embed_dim=vit.embed_dim,
            num_prefix_tokens=vit.num_prefix_tokens,
            frozen=frozen,
            mean=mean,
            std=std,
            antialias=antialias,
            norm_eps=getattr(vit.norm, 'eps', 1e-6))
        self.model_name = model_name
        self.vit = vit
        # Parts the encoder never uses: the affine final norm and the head
        # (SigLIP's attention-pooling head included).
        self.vit.norm = nn.Identity()
        self.vit.fc_norm = nn.Identity()
        self.vit.head = nn.Identity()
        if getattr(self.vit, 'attn_pool', None) is not None:
            self.vit.attn_pool = None
        if frozen:
            self.freeze()

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self.vit.blocks

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        x = vit.patch_embed(x)
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        return vit.norm_pre(x)
