"""RAE: a frozen VFM's patch tokens are the latents."""
import torch

from decq_plugin.registry import MODELS
from .base import BaseTokenizer, Latents


@MODELS.register_module()
class RAETokenizer(BaseTokenizer):
    """Representation autoencoder: frozen VFM encoder + ViT pixel decoder.

    Latents: ``{'patch': [B, C, h, w]}`` (C=768, h=w=16 for DINOv2-B at 224).
    """

    def encode_raw(self, images: torch.Tensor) -> Latents:
        return {'patch': self.encoder.tokens_to_grid(self.encoder(images))}
