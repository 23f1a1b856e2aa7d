"""DecQ: RAE latents plus detail-condensing queries."""
from typing import Optional

import torch

from decq_plugin.registry import MODELS
from .base import BaseTokenizer, Latents, build_module


@MODELS.register_module()
class DecQTokenizer(BaseTokenizer):
    """RAE tokenizer whose frozen VFM also feeds a :class:`QueryCondenser`.

    Latents: ``{'patch': [B,C,h,w], 'query': [B,Q,C]}``. The patch latents
    are exactly RAE's; the decoder reads both jointly.

    Args:
        condenser: config of a :class:`QueryCondenser`; ``embed_dim``
            defaults to the VFM width.
        other args: see :class:`BaseTokenizer`.
    """

    def __init__(self,
                 encoder: dict,
                 decoder: dict,
                 condenser: Optional[dict] = None,
                 **kwargs) -> None:
        self._condenser_cfg = dict(condenser or {})
        self._condenser_cfg.setdefault('type', 'QueryCondenser')
        super().__init__(encoder, decoder, **kwargs)

    def _build_latent_modules(self) -> None:
        self.condenser = build_module(
            self._condenser_cfg, embed_dim=self.encoder.embed_dim)
        self.condenser.check_encoder(self.encoder)  # fail at build time

    @property
    def num_queries(self) -> int:
        return self.condenser.num_queries

    def encode_queries(self, images: torch.Tensor) -> Latents:
        """Raw ``{'patch': [B,C,h,w], 'query': [B,Q,C]}`` of one VFM pass."""
        with self.condenser.condense(self.encoder, images.shape[0]):
            patches = self.encoder(images)
            queries = self.condenser.result()
        return {'patch': self.encoder.tokens_to_grid(patches),
                'query': queries}

    def encode_raw(self, images: torch.Tensor) -> Latents:
        return self.encode_queries(images)
