"""The tokenizer API shared by RAE, DecQ and the ablation tokenizers.

* ``encode(images [B,3,H,W] in [0,1]) -> {'patch': [B,C,h,w], 'query':
  [B,Q,C]}`` (``'query'`` only where the tokenizer has queries), normalised
  by the latent statistics when the tokenizer has them;
* ``decode(latents) -> images [B,3,H,W] in [0,1]``.

``encode`` and ``reconstruct`` take float images of exactly ``image_size``
pixels a side and refuse anything else (uint8, values outside [0, 1], other
sizes or channel counts) with a message that says how to convert it; see
:mod:`.inputs`.

Training uses the raw forms: :meth:`encode_raw`, :meth:`noise_augment` and
:meth:`decode_raw` (unclamped pixels).
"""
from typing import Dict, Optional, Tuple, Union

import torch
from mmengine.model import BaseModule
from torch import nn

from decq_plugin.registry import MODELS
from .inputs import check_image_layout, check_image_range, check_latents
from .noise_augmentation import noise_augment
from .normalization import LatentNormalizer

Latents = Dict[str, torch.Tensor]


def build_module(cfg: Union[dict, nn.Module], **defaults) -> nn.Module:
    """Build ``cfg`` from the MODELS registry, filling unset ``defaults``."""
    if isinstance(cfg, nn.Module):
        return cfg
    cfg = dict(cfg)
    for key, value in defaults.items():
        cfg.setdefault(key, value)
    return MODELS.build(cfg)


class BaseTokenizer(BaseModule):
    """A frozen-VFM encoder, an optional latent normaliser and a pixel
    decoder.

    Args:
        encoder: config of a :class:`VFMEncoder` (e.g. ``TimmViTEncoder``).
        decoder: config of a :class:`ViTPixelDecoder`; ``in_channels``,
            ``grid_size`` and ``num_queries`` default to what the encoder
            makes.
        noise_tau: tau of the training noise augmentation (0 disables it).
        latent_stats: statistics file for latent normalisation (see
            :mod:`.normalization`); ``None`` keeps latents raw.
        stats_eps: epsilon of the normalisation.
    """

    def __init__(self,
                 encoder: dict,
                 decoder: dict,
                 noise_tau: float = 0.8,
                 latent_stats: Optional[str] = None,
                 stats_eps: float = 1e-5,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if noise_tau < 0:
            raise ValueError(f'noise_tau={noise_tau} must be >= 0')
        self.noise_tau = float(noise_tau)
        self.encoder = build_module(encoder)
        self._build_latent_modules()
        self.decoder = build_module(decoder, **self._decoder_defaults())
        self.normalizer = LatentNormalizer(self.latent_shapes, latent_stats,
                                           stats_eps)

    # -- what subclasses define ------------------------------------------------
    def _build_latent_modules(self) -> None:
        """Build modules between the VFM and the latents (condensers...)."""

    def _decoder_defaults(self) -> dict:
        h, _ = self.encoder.grid_size
        return dict(in_channels=self.latent_channels, grid_size=h,
                    num_queries=self.num_queries)

    def encode_raw(self, images: torch.Tensor) -> Latents:
        """Images ``[B,3,H,W]`` in [0,1] -> un-normalised latents."""
        raise NotImplementedError

    @property
    def latent_channels(self) -> int:
        """Channels C of the patch latents."""
        return self.encoder.embed_dim

    @property
    def num_queries(self) -> int:
        """Q query tokens per image (0 for patch-only tokenizers)."""
        return 0

    # -- the public API ------------------------------------------------------------
    @property
    def latent_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Per-sample latent shapes, e.g. ``{'patch': (768, 16, 16)}``."""
        h, w = self.encoder.grid_size
        shapes = {'patch': (self.latent_channels, h, w)}
        if self.num_queries:
            shapes['query'] = (self.num_queries, self.encoder.embed_dim)
        return shapes

    @property
    def image_size(self) -> int:
        """Side of the decoded images."""
        return self.decoder.grid_size * self.decoder.patch_size

    def check_images(self, images: torch.Tensor,
                     check_range: bool = True) -> None:
        """Raise unless ``images`` is float ``[B,3,S,S]`` (``S =
        image_size``) in [0, 1]; ``check_range`` reads the values (one
        device sync), the rest reads metadata only."""
        check_image_layout(images, self.image_size)
        if check_range:
            check_image_range(images)

    def _as_model_dtype(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` (images or latents) cast to the floating dtype of the
        tokenizer's weights (float64 inputs to a float32 model ...)."""
        weight = next(self.parameters(), None)
        if weight is None or tensor.dtype == weight.dtype:
            return tensor
        return tensor.to(weight.dtype)

    def encode(self,
               images: torch.Tensor,
               normalize: bool = True,
               check_range: bool = True) -> Latents:
        """Images ``[B,3,S,S]`` (``S = image_size``) in [0,1] -> latents
        (normalised when the tokenizer has statistics and ``normalize`` is
        true). Wrong inputs are refused (:meth:`check_images`); other float
        dtypes (float64 ...) are cast to the weights' dtype;
        ``check_range=False`` skips the value check and its device sync."""
        self.check_images(images, check_range)
        latents = self.encode_raw(self._as_model_dtype(images))
        return self.normalizer.normalize(latents) if normalize else latents

    def decode_raw(self, latents: Latents) -> torch.Tensor:
        """Un-normalised latents -> unclamped pixels ``[B,3,H,W]``."""
        return self.decoder(latents['patch'], latents.get('query'))

    def decode(self,
               latents: Latents,
               normalized: bool = True,
               clamp: bool = True) -> torch.Tensor:
        """Latents (as :meth:`encode` returns them) -> images ``[B,3,S,S]``
        in [0,1] (unclamped when ``clamp`` is false)."""
        check_latents(latents, self.latent_shapes)
        latents = {k: self._as_model_dtype(v) for k, v in latents.items()}
        if normalized:
            latents = self.normalizer.denormalize(latents)
        images = self.decode_raw(latents)
        return images.clamp(0, 1) if clamp else images

    def reconstruct(self, images: torch.Tensor,
                    check_range: bool = True) -> torch.Tensor:
        """Images -> reconstructions, both ``[B,3,S,S]`` in [0,1]; inputs
        are checked as in :meth:`encode`."""
        self.check_images(images, check_range)
        return self.decode(self.encode_raw(self._as_model_dtype(images)),
                           normalized=False)

    def noise_augment(self,
                      latents: Latents,
                      generator: Optional[torch.Generator] = None) -> Latents:
        """Training-time noise augmentation of every latent type."""
        return noise_augment(latents, self.noise_tau, generator)

    def forward(self, images: torch.Tensor,
                augment: bool = True) -> Dict[str, torch.Tensor]:
        """One training pass: ``{'recon': unclamped [B,3,H,W], 'loss_*':
        auxiliary losses}``. Latents are noise-augmented when ``augment``.

        Going through ``forward`` lets DDP wrappers see the pass; the
        images' layout is checked, not their values (no device sync)."""
        check_image_layout(images, self.image_size)
        latents = self.encode_raw(images)
        out = dict(self.auxiliary_losses(images, latents))
        if augment:
            latents = self.noise_augment(latents)
        out['recon'] = self.decode_raw(latents)
        return out

    def auxiliary_losses(self, images: torch.Tensor,
                         latents: Latents) -> Dict[str, torch.Tensor]:
        """Extra training losses of the tokenizer itself (default none)."""
        return {}

    @property
    def last_layer(self) -> torch.Tensor:
        """Weight used for the adaptive GAN weight."""
        return self.decoder.last_layer
