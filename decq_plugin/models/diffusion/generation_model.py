"""Stage 2: class-conditional latent flow matching with a frozen tokenizer.

Data flow::

    images [B,3,H,W] -> frozen tokenizer.encode (no grad) -> latents
    (or cached latents from CachedLatentDataset)           -> latents
    latents, labels -> FlowMatchingLoss(denoiser)          -> loss
    labels, noise -> sampler(guided denoiser) -> latents -> decode -> images

Latents are the tokenizer's *normalised* latents
(``{'patch': [B,C,h,w], 'query': [B,Q,C]}``, 'query' for DecQ only).

EMA: only the denoiser should be averaged. Everything else is frozen, so use
the EMA of trainable parameters (it shares the frozen tokenizer and guide
with the model instead of copying them)::

    custom_hooks = [dict(type='EMAHook',
                         ema_type='TrainableExponentialMovingAverage',
                         momentum=0.0005)]   # EMA decay 0.9995

Validation/test then sample with the EMA denoiser (``EMAHook`` swaps the
weights in), and the saved ``state_dict`` holds the EMA weights.

Class dropout (for classifier-free guidance) happens in the denoiser
(``DiTDH(class_dropout=0.1)``), nowhere else.

A config sketch (DecQ, autoguidance)::

    model = dict(
        type='LatentDiffusionModel', num_classes=1000,
        tokenizer=dict(type='DecQTokenizer', ..., latent_stats='stats.pt'),
        tokenizer_ckpt='stage1/epoch_16.pth',
        denoiser=dict(type='DiTDH', arch='XL'),
        sampler=dict(type='EulerSampler', num_points=50),
        guidance=dict(type='AutoGuidance', scale=1.42,
                      guide=dict(type='DiTDH', arch='S'),
                      guide_ckpt='dit_s/iter_xxx.pth'))
"""
import logging
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModel
from torch import Tensor

from decq_plugin.registry import MODELS
from ..compile_regions import compile_regions
from ..state_dict_keys import use_wrapper_free_keys
from .flow_path import map_latents
from .samplers import freeze, load_frozen_weights

Latents = Dict[str, Tensor]


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Switch ``module`` to eval mode for a block, then restore it."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def build_frozen_tokenizer(cfg: dict, ckpt: Optional[str] = None,
                           prefix: str = 'tokenizer',
                           use_ema: bool = True) -> nn.Module:
    """Build a tokenizer from ``cfg``, load ``ckpt`` and freeze it.

    A statistics file named in ``cfg['latent_stats']`` wins over the
    normaliser buffers stored in the checkpoint (stage-1 checkpoints are
    usually written before the statistics are computed)."""
    tokenizer = MODELS.build(cfg)
    if ckpt is not None:
        load_frozen_weights(tokenizer, ckpt, prefix, use_ema)
        stats = cfg.get('latent_stats')
        if stats is not None:
            tokenizer.normalizer.load(stats)
    return freeze(tokenizer)


def denoiser_defaults(latent_shapes: Dict[str, tuple],
                      num_classes: Optional[int] = None) -> dict:
    """``DiTDH`` arguments fixed by a tokenizer's latents: ``in_channels``,
    ``grid_size``, ``num_queries`` (and ``query_channels``), plus
    ``num_classes`` when given.

    Args:
        latent_shapes: ``{'patch': (C, h, w), 'query': (Q, C_q)}`` per
            sample (``'query'`` only for DecQ-style tokenizers).
    """
    c, h, w = latent_shapes['patch']
    if h != w:
        raise ValueError(f'the tokenizer makes a non-square latent grid '
                         f'{(h, w)}; DiTDH needs h == w')
    out = dict(in_channels=c, grid_size=h, num_queries=0)
    if 'query' in latent_shapes:
        out.update(num_queries=latent_shapes['query'][0],
                   query_channels=latent_shapes['query'][1])
    if num_classes is not None:
        out['num_classes'] = int(num_classes)
    return out


@MODELS.register_module()
class LatentDiffusionModel(BaseModel):
    """Flow-matching DiT on a frozen tokenizer's latents.

    Args:
        tokenizer: tokenizer config (``RAETokenizer``/``DecQTokenizer``...),
            normally with ``latent_stats`` and an encoder with
            ``pretrained=False`` when ``tokenizer_ckpt`` holds the VFM.
        denoiser: denoiser config (``DiTDH``); ``in_channels``,
            ``grid_size``, ``num_queries``, ``query_channels`` and
            ``num_classes`` default to the tokenizer's latents and
            ``num_classes``.
        num_classes: number of classes (``None``: the denoiser's).
        loss: loss config, ``loss(denoiser, latents, labels) -> dict``.
        sampler: sampler config (``EulerSampler``/``HeunSampler``). With no
            ``shift`` it uses the loss's shift for the latents.
        guidance: None, ``ClassifierFreeGuidance`` or ``AutoGuidance``
            config; an ``AutoGuidance`` ``guide`` config gets the same
            defaults as ``denoiser``.
        tokenizer_ckpt: checkpoint of the tokenizer (keys
            ``'<tokenizer_prefix>.*'`` in ``'state_dict'``, as written by the
            stage-1 ``AutoencoderModel``); None keeps the built weights.
        tokenizer_prefix: key prefix of the tokenizer in that checkpoint.
        use_ema: load the tokenizer's EMA weights (the ``'state_dict'`` of
            an ``EMAHook`` checkpoint) or, if False, its raw weights (from
            ``'ema_state_dict'``).
        decode_with: "DecQ (RAE decoder)": ``dict(tokenizer=cfg, ckpt=path,
            prefix='tokenizer', use_ema=True)`` of a plain RAE tokenizer
            sharing the VFM patch space; samples drop their queries and the
            patch latents (denormalised with *this* tokenizer's patch
            statistics) are decoded raw by its decoder.
        compile: ``torch.compile`` of the heavy regions (see
            :mod:`decq_plugin.models.compile_regions`): False (eager),
            True (:meth:`default_compile_regions`) or a dict with
            ``regions`` and ``torch.compile`` arguments.
    """

    def __init__(self,
                 tokenizer: dict,
                 denoiser: dict,
                 num_classes: Optional[int] = None,
                 loss: dict = dict(type='FlowMatchingLoss'),
                 sampler: dict = dict(type='EulerSampler'),
                 guidance: Optional[dict] = None,
                 tokenizer_ckpt: Optional[str] = None,
                 tokenizer_prefix: str = 'tokenizer',
                 use_ema: bool = True,
                 decode_with: Optional[dict] = None,
                 compile: Union[bool, dict, None] = False,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        if num_classes is not None and num_classes <= 0:
            raise ValueError(
                f'num_classes must be positive, got {num_classes}')
        # Same checkpoint keys on one GPU and under MMSeparateDDP.
        use_wrapper_free_keys(self)
        self.tokenizer = build_frozen_tokenizer(
            tokenizer, tokenizer_ckpt, tokenizer_prefix, use_ema)
        defaults = self._denoiser_defaults(num_classes)
        self.denoiser = MODELS.build(self._with_defaults(denoiser, defaults))
        self.num_classes = int(self.denoiser.num_classes)
        self.loss = MODELS.build(loss)
        self.sampler = MODELS.build(sampler)
        self.guidance = None
        if guidance is not None:
            guidance = dict(guidance)
            if isinstance(guidance.get('guide'), dict):
                guidance['guide'] = self._with_defaults(
                    guidance['guide'], defaults)
            self.guidance = MODELS.build(guidance)
        self.rae_decoder = None
        if decode_with is not None:
            self.rae_decoder = self._build_rae_decoder(decode_with)
        self.compiled_regions = compile_regions(
            self, compile, self.default_compile_regions())

    def default_compile_regions(self) -> List[str]:
        """The denoiser's (and an autoguidance guide's) blocks and the
        pixel decoders' blocks (compiled on first use: training never
        decodes, sampling does)."""
        regions = ['denoiser.body_blocks', 'denoiser.head_blocks',
                   'tokenizer.decoder.blocks']
        if self.rae_decoder is not None:
            regions.append('rae_decoder.decoder.blocks')
        guide = getattr(self.guidance, 'guide', None)
        for part in ('body_blocks', 'head_blocks'):
            if isinstance(getattr(guide, part, None), nn.ModuleList):
                regions.append(f'guidance.guide.{part}')
        return regions

    # -- construction -------------------------------------------------------
    def _denoiser_defaults(self, num_classes: Optional[int]) -> dict:
        return denoiser_defaults(self.tokenizer.latent_shapes, num_classes)

    @staticmethod
    def _with_defaults(cfg: dict, defaults: dict) -> dict:
        cfg = dict(cfg)
        for key, value in defaults.items():
            if key in cfg and cfg[key] != value:
                raise ValueError(
                    f'denoiser {key}={cfg[key]} contradicts {value} given by '
                    f'the tokenizer latents / num_classes; drop it from the '
                    f'denoiser config')
            cfg[key] = value
        return cfg

    def _build_rae_decoder(self, cfg: dict) -> nn.Module:
        cfg = dict(cfg)
        unknown = set(cfg) - {'tokenizer', 'ckpt', 'prefix', 'use_ema'}
        if 'tokenizer' not in cfg or unknown:
            raise ValueError('decode_with must be dict(tokenizer=cfg, '
                             "ckpt=path, prefix='tokenizer', use_ema=True); "
                             f'got keys {sorted(cfg)}')
        rae = build_frozen_tokenizer(cfg['tokenizer'], cfg.get('ckpt'),
                                     cfg.get('prefix', 'tokenizer'),
                                     cfg.get('use_ema', True))
        if rae.num_queries:
            raise ValueError('decode_with.tokenizer must be a patch-only '
                             f'(RAE) tokenizer, it has {rae.num_queries} '
                             'queries')
        ours = self.tokenizer.latent_shapes['patch']
        if tuple(rae.latent_shapes['patch']) != tuple(ours):
            raise ValueError(
                f'decode_with.tokenizer makes patch latents '
                f"{rae.latent_shapes['patch']}, the tokenizer {ours}")
        if cfg.get('ckpt') is None:
            print_log('decode_with has no ckpt: the RAE decoder keeps its '
                      'initial weights', logger='current',
                      level=logging.WARNING)
        return rae

    def train(self, mode: bool = True) -> 'LatentDiffusionModel':
        # Frozen parts (tokenizers, guide) stay in eval mode.
        super().train(mode)
        self.tokenizer.eval()
        if self.rae_decoder is not None:
            self.rae_decoder.eval()
        if self.guidance is not None:
            self.guidance.eval()
        return self

    # -- latents ------------------------------------------------------------
    @property
    def latent_shapes(self) -> Dict[str, tuple]:
        """Per-sample latent shapes, e.g. ``{'patch': (C, h, w)}``."""
        return dict(self.tokenizer.latent_shapes)

    @property
    def image_size(self) -> int:
        decoder = self.rae_decoder or self.tokenizer
        return decoder.image_size

    @torch.no_grad()
    def encode(self, images: Tensor, check_range: bool = True) -> Latents:
        """Images [B,3,H,W] in [0,1] -> normalised latents (frozen); see
        the tokenizer's ``encode`` for the input checks."""
        return self.tokenizer.encode(images, check_range=check_range)

    def make_noise(self, batch: int,
                   generator: Optional[torch.Generator] = None,
                   device: Union[str, torch.device, None] = None,
                   seeds: Optional[Tensor] = None) -> Latents:
        """Standard normal latents ``{'patch': [B,C,h,w], ...}``.

        ``seeds`` ([B] ints) draws sample ``i`` from a generator seeded
        with ``seeds[i]`` (independent of the batch composition); otherwise
        ``generator`` (or torch's global RNG) draws the whole batch."""
        if device is None:
            device = next(self.denoiser.parameters()).device
        shapes = self.latent_shapes
        if seeds is None:
            where = device if generator is None else generator.device
            return {k: torch.randn((batch, ) + tuple(s), generator=generator,
                                   device=where).to(device)
                    for k, s in shapes.items()}
        seeds = torch.as_tensor(seeds).reshape(-1).tolist()
        if len(seeds) != batch:
            raise ValueError(f'seeds has {len(seeds)} entries for a batch of '
                             f'{batch}')
        parts = []
        for seed in seeds:
            g = torch.Generator(device=device).manual_seed(int(seed))
            parts.append({k: torch.randn((1, ) + tuple(s), generator=g,
                                         device=device)
                          for k, s in shapes.items()})
        return {k: torch.cat([p[k] for p in parts]) for k in shapes}

    def velocity_fn(self):
        """The (guided) velocity function the sampler integrates."""
        if self.guidance is None:
            return self.denoiser
        return self.guidance.bind(self.denoiser)

    def _check_labels(self, labels: Tensor) -> Tensor:
        labels = torch.as_tensor(labels).long().reshape(-1)
        if labels.numel() and (labels.min() < 0
                               or labels.max() >= self.num_classes):
            raise ValueError(f'labels must lie in [0, {self.num_classes}), '
                             f'got {labels.tolist()}')
        return labels

    @torch.no_grad()
    def sample_latents(self, labels: Tensor,
                       noise: Optional[Latents] = None,
                       generator: Optional[torch.Generator] = None
                       ) -> Latents:
        """Sample normalised latents for ``labels`` [B] (denoiser in eval
        mode, so without class dropout).

        Args:
            labels: [B] class indices.
            noise: starting latents at t = 1 (default: standard normal from
                ``generator`` or torch's RNG).
            generator: RNG of the default noise.
        """
        device = next(self.denoiser.parameters()).device
        labels = self._check_labels(labels).to(device)
        if noise is None:
            noise = self.make_noise(labels.shape[0], generator, device)
        else:
            want = self.latent_shapes
            got = {k: tuple(v.shape[1:]) for k, v in noise.items()}
            if got != {k: tuple(s) for k, s in want.items()} or any(
                    v.shape[0] != labels.shape[0] for v in noise.values()):
                raise ValueError(f'noise must hold {want} per sample for '
                                 f'{labels.shape[0]} labels, got {got}')
            noise = map_latents(lambda z: z.to(device), noise)
        shift = None
        if getattr(self.sampler, 'shift', None) is None and hasattr(
                self.loss, 'time_shift'):
            shift = self.loss.time_shift(noise)  # the training shift
        with eval_mode(self.denoiser):
            return self.sampler(self.velocity_fn(), noise, labels,
                                shift=shift)

    @torch.no_grad()
    def decode(self, latents: Latents) -> Tensor:
        """Normalised latents -> images [B,3,H,W] in [0,1].

        With ``decode_with`` the queries are dropped and the patches,
        denormalised with this tokenizer's statistics, go through the RAE
        decoder as raw latents."""
        if self.rae_decoder is None:
            return self.tokenizer.decode(latents)
        patch = self.tokenizer.normalizer.denormalize(
            {'patch': latents['patch']})
        return self.rae_decoder.decode(patch, normalized=False)

    @torch.no_grad()
    def sample(self, labels: Tensor, noise: Optional[Latents] = None,
               generator: Optional[torch.Generator] = None) -> Tensor:
        """Images [B,3,H,W] in [0,1] for ``labels`` [B] (see
        :meth:`sample_latents`)."""
        return self.decode(self.sample_latents(labels, noise, generator))

    # -- MMEngine entry points ----------------------------------------------
    def _to_latents(self, inputs: Union[Tensor, Latents]) -> Latents:
        """Images (encoded here) or cached latents -> float32 latents."""
        if isinstance(inputs, Tensor):  # no value check (a sync) per step
            latents = self.encode(inputs, check_range=False)
        elif isinstance(inputs, dict) and 'patch' in inputs:
            latents = inputs
        else:
            latents = None
        if latents is not None:
            return {k: v.float() for k, v in latents.items()}
        raise TypeError('inputs must be images [B,3,H,W] or a latents dict '
                        f"with 'patch', got {type(inputs).__name__}")

    @staticmethod
    def _labels(data_samples: Optional[dict]) -> Tensor:
        if not isinstance(data_samples, dict) or 'gt_label' not in \
                data_samples:
            raise KeyError("data_samples must be a dict with 'gt_label' [B]")
        return torch.as_tensor(data_samples['gt_label']).long().reshape(-1)

    def forward(self,
                inputs: Union[Tensor, Latents, None] = None,
                data_samples: Optional[dict] = None,
                mode: str = 'tensor') -> Union[dict, list, Tensor]:
        """``'loss'``: the flow-matching loss dict of the batch (images or
        latents in ``inputs``); ``'predict'``: one ``{'pred': [3,H,W] in
        [0,1], 'gt_label': int}`` per label, sampled from the noise seeded
        by ``data_samples['seed']`` when given; ``'tensor'``: sampled images
        [B,3,H,W]. ``inputs`` is unused outside ``'loss'``."""
        labels = self._labels(data_samples)
        if mode == 'loss':
            latents = self._to_latents(inputs)
            labels = labels.to(latents['patch'].device)
            return self.loss(self.denoiser, latents, labels)
        if mode not in ('predict', 'tensor'):
            raise ValueError(f"mode='{mode}' is not 'loss', 'predict' or "
                             "'tensor'")
        noise = None
        seeds = data_samples.get('seed')
        if seeds is not None:
            seeds = torch.as_tensor(seeds).reshape(-1)
            if seeds.numel() == 1 and labels.numel() > 1:
                gen = torch.Generator(device=next(
                    self.denoiser.parameters()).device)
                gen.manual_seed(int(seeds))
                noise = self.make_noise(labels.numel(), generator=gen)
            else:
                noise = self.make_noise(labels.numel(), seeds=seeds)
        images = self.sample(labels, noise=noise)
        if mode == 'tensor':
            return images
        return self.pack_predictions(images, data_samples)

    @staticmethod
    def pack_predictions(images: Tensor, data_samples: dict) -> List[dict]:
        """Per-image ``{'pred': [3,H,W] (cpu), 'gt_label': int, ...}``."""
        images = images.float().cpu()
        out = []
        for i in range(images.shape[0]):
            item = {'pred': images[i]}
            for key, value in data_samples.items():
                if torch.is_tensor(value):
                    item[key] = (value[i] if value.dim() else value).item()
                elif isinstance(value, (list, tuple)):
                    item[key] = value[i]
            out.append(item)
        return out
