"""The paper's ablation tokenizers (Table 3), all starting from the same
VFM as RAE:

* :class:`VFMFinetuneTokenizer`: the VFM is unfrozen and trained with the
  reconstruction losses.
* :class:`VFMDistillTokenizer`: unfrozen, plus an L2 loss to the outputs of
  a frozen copy of the VFM.
* :class:`VFMFeatConcatTokenizer`: frozen VFM; as many query tokens as
  patches pass a low-dimensional bottleneck and are concatenated to the
  patch tokens along the feature dimension, forming a new latent space.
"""
import copy
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from decq_plugin.registry import MODELS
from .base import Latents
from .decq import DecQTokenizer
from .rae import RAETokenizer


@MODELS.register_module()
class VFMFinetuneTokenizer(RAETokenizer):
    """RAE with a trainable VFM (``encoder.frozen`` is forced to False)."""

    def __init__(self, encoder: dict, decoder: dict, **kwargs) -> None:
        super().__init__(dict(encoder, frozen=False), decoder, **kwargs)


@MODELS.register_module()
class VFMDistillTokenizer(VFMFinetuneTokenizer):
    """Trainable VFM kept close to a frozen copy of itself.

    Args:
        distill_weight: weight of the L2 (MSE) distillation loss between the
            trained and the frozen VFM's patch tokens.
    """

    def __init__(self,
                 encoder: dict,
                 decoder: dict,
                 distill_weight: float = 1.0,
                 **kwargs) -> None:
        super().__init__(encoder, decoder, **kwargs)
        if distill_weight < 0:
            raise ValueError(f'distill_weight={distill_weight} must be >= 0')
        self.distill_weight = float(distill_weight)
        self.teacher = copy.deepcopy(self.encoder)
        self.teacher.freeze()

    def auxiliary_losses(self, images: torch.Tensor,
                         latents: Latents) -> Dict[str, torch.Tensor]:
        target = self.encoder.tokens_to_grid(self.teacher(images))
        loss = F.mse_loss(latents['patch'], target)
        return {'loss_distill': self.distill_weight * loss}


@MODELS.register_module()
class VFMFeatConcatTokenizer(DecQTokenizer):
    """Frozen VFM + one query per patch through a bottleneck, concatenated
    to the patch tokens along channels: latents ``{'patch': [B, C+d, h, w]}``.

    Query i is placed at patch position i (row-major).

    Args:
        bottleneck_dim: d, channels added to each patch token.
        condenser: as for DecQ; ``num_queries`` is forced to h*w.
    """

    def __init__(self,
                 encoder: dict,
                 decoder: dict,
                 condenser: Optional[dict] = None,
                 bottleneck_dim: int = 32,
                 **kwargs) -> None:
        if bottleneck_dim < 1:
            raise ValueError(f'bottleneck_dim={bottleneck_dim} must be >= 1')
        self.bottleneck_dim = int(bottleneck_dim)
        super().__init__(encoder, decoder, condenser=condenser, **kwargs)

    def _build_latent_modules(self) -> None:
        self._condenser_cfg['num_queries'] = self.encoder.num_patches
        super()._build_latent_modules()
        self.bottleneck = nn.Linear(self.encoder.embed_dim,
                                    self.bottleneck_dim)

    @property
    def num_queries(self) -> int:
        return 0

    @property
    def latent_channels(self) -> int:
        return self.encoder.embed_dim + self.bottleneck_dim

    def encode_raw(self, images: torch.Tensor) -> Latents:
        latents = self.encode_queries(images)
        extra = self.encoder.tokens_to_grid(self.bottleneck(latents['query']))
        return {'patch': torch.cat([latents['patch'], extra], dim=1)}
