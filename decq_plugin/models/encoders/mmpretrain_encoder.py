"""Adapter for mmpretrain ``VisionTransformer`` backbones."""
import os
from typing import Optional, Sequence

import torch
from torch import nn

from decq_plugin.registry import MODELS
from .base import (IMAGENET_MEAN, IMAGENET_STD, MissingPretrainedWeightsError,
                   VFMEncoder)


@MODELS.register_module()
class MMPretrainViTEncoder(VFMEncoder):
    """A frozen mmpretrain ViT used as the tokenizer encoder.

    DINOv2-B/14 (without registers) is
    ``backbone=dict(arch='base', patch_size=14, layer_scale_init_value=1e-5)``.

    Args:
        backbone: keyword arguments of ``mmpretrain.models.VisionTransformer``
            (``img_size`` defaults to ``input_size``).
        input_size: VFM input side.
        pretrained: load weights from ``weights_path`` (an mmpretrain
            checkpoint whose ``state_dict`` holds ``backbone.*`` keys or bare
            backbone keys). mmpretrain's own download URLs can be given too.
        weights_path: local file or URL.
        frozen: see :class:`VFMEncoder`.
    """

    def __init__(self,
                 backbone: Optional[dict] = None,
                 input_size: int = 224,
                 pretrained: bool = True,
                 weights_path: Optional[str] = None,
                 frozen: bool = True,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD,
                 antialias: bool = False) -> None:
        from mmpretrain.models import VisionTransformer
        cfg = dict(arch='base', patch_size=14, layer_scale_init_value=1e-5)
        cfg.update(backbone or {})
        cfg.setdefault('img_size', input_size)
        cfg['final_norm'] = False
        cfg['out_type'] = 'raw'
        if pretrained and not weights_path:
            raise MissingPretrainedWeightsError(
                'MMPretrainViTEncoder(pretrained=True) needs weights_path: a '
                'local mmpretrain checkpoint of the backbone (for DINOv2-B/14 '
                'the file vit-base-p14_dinov2-pre_3rdparty_20230426-'
                'ba246503.pth from mmpretrain\'s model zoo), or set '
                'pretrained=False for random weights.')
        vit = VisionTransformer(**cfg)
        if pretrained:
            self._load(vit, weights_path)
        patch = cfg['patch_size']
        super().__init__(
            input_size=input_size,
            patch_size=patch,
            embed_dim=vit.embed_dims,
            num_prefix_tokens=vit.num_extra_tokens,
            frozen=frozen,
            mean=mean,
            std=std,
            antialias=antialias,
            norm_eps=1e-6)
        self.vit = vit
        if frozen:
            self.freeze()

    @staticmethod
    def _load(vit: nn.Module, path: str) -> None:
        from mmengine.runner.checkpoint import CheckpointLoader
        if '://' not in path and not os.path.isfile(path):
            raise MissingPretrainedWeightsError(
                f"weights_path='{path}' does not exist: put the mmpretrain "
                'backbone checkpoint there')
        ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
        state = ckpt.get('state_dict', ckpt)
        if any(k.startswith('backbone.') for k in state):
            state = {k[len('backbone.'):]: v for k, v in state.items()
                     if k.startswith('backbone.')}
        missing, unexpected = vit.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith('ln1')]
        if missing:
            raise ValueError(f"'{path}' is not a checkpoint of this backbone: "
                             f'{len(missing)} missing keys, e.g. {missing[:5]}')

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self.vit.layers

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        from mmpretrain.models.utils import resize_pos_embed
        vit = self.vit
        b = x.shape[0]
        x, patch_hw = vit.patch_embed(x)
        if vit.cls_token is not None:
            x = torch.cat([vit.cls_token.expand(b, -1, -1), x], dim=1)
        x = x + resize_pos_embed(
            vit.pos_embed, vit.patch_resolution, patch_hw,
            mode=vit.interpolate_mode, num_extra_tokens=vit.num_extra_tokens)
        x = vit.drop_after_pos(x)
        return vit.pre_norm(x)
