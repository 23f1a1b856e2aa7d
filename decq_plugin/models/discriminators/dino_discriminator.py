"""DINO-feature discriminator of the stage-1 GAN loss (RAE / StyleGAN-T style).

A frozen DINO ViT-S/8 reads the (augmented) image at 224 px; the patch
tokens of a few of its blocks each feed a small trainable head that gives
one logit per token. Heads are 1-D convolutions over the token sequence with
spectral norm: a 1x1 projection block, a residual block with a wide circular
kernel, and a 1x1 convolution to one logit. The network is trained with the
hinge loss (:mod:`decq_plugin.models.losses.adversarial`).
"""
import math
import os
from typing import List, Optional, Sequence

import timm
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from decq_plugin.models.encoders.base import MissingPretrainedWeightsError
from decq_plugin.models.encoders.timm_names import check_timm_name
from decq_plugin.registry import MODELS


def _conv_block(in_channels: int, out_channels: int,
                kernel_size: int) -> nn.Sequential:
    """Spectral-norm conv over tokens, per-sample token norm, leaky ReLU.

    ``[B, C_in, N] -> [B, C_out, N]``. The norm uses each sample's own
    statistics over its tokens (no running statistics), so it behaves the
    same in train and eval mode and real/fake batches never mix.
    """
    conv = nn.Conv1d(in_channels, out_channels, kernel_size,
                     padding=kernel_size // 2, padding_mode='circular')
    return nn.Sequential(
        spectral_norm(conv),
        nn.InstanceNorm1d(out_channels, affine=True, eps=1e-6),
        nn.LeakyReLU(0.2))


class TokenHead(nn.Module):
    """Per-token logits from one block's tokens: ``[B, C, N] -> [B, N]``.

    Args:
        in_channels: token width of the feature network.
        channels: width inside the head.
        kernel_size: odd kernel of the residual block's token convolution.
    """

    def __init__(self, in_channels: int, channels: int,
                 kernel_size: int) -> None:
        super().__init__()
        self.proj = _conv_block(in_channels, channels, 1)
        self.mix = _conv_block(channels, channels, kernel_size)
        self.to_logit = spectral_norm(nn.Conv1d(channels, 1, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.proj(tokens)
        h = (h + self.mix(h)) / math.sqrt(2)
        return self.to_logit(h).squeeze(1)


def _weights_hint(model_name: str) -> str:
    """Where the pretrained weights of a timm model can be had."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    places = []
    if cfg is not None and cfg.hf_hub_id:
        places.append('model.safetensors from '
                      f'https://huggingface.co/{cfg.hf_hub_id}')
    if cfg is not None and cfg.url:
        places.append(f'{os.path.basename(cfg.url)} from {cfg.url}')
    return ' or '.join(places) or 'its weight file'


@MODELS.register_module()
class DINODiscriminator(nn.Module):
    """Frozen timm ViT with trainable per-token heads on chosen blocks.

    Images ``[B, 3, H, W]`` in ``[0, 1]`` are resized (bicubic) to
    ``input_size``, normalised with the model's mean/std (ImageNet for DINO)
    and run through the frozen ViT up to the last chosen block; each chosen
    block's patch tokens (prefix tokens dropped) go through one
    :class:`TokenHead`. The ViT stays in eval mode and never needs grad, but
    gradients reach the input images (for the generator loss); a detached
    input (the real branch) stores no ViT activations.

    Args:
        model_name: timm ViT name, with or without a pretrained tag;
            default DINO ViT-S/8 (``'vit_small_patch8_224.dino'``).
        pretrained: load the model's pretrained weights.
        weights_path: local weight file (timm ``pretrained_cfg_overlay``),
            e.g. ``model.safetensors`` of ``timm/vit_small_patch8_224.dino``.
        block_indices: 0-indexed blocks whose outputs get a head, increasing.
        head_channels: width inside the heads; ``None``: the ViT width.
        kernel_size: odd kernel of the heads' token convolution.
        input_size: side the images are resized to; must be the ViT's.
        model_kwargs: extra ``timm.create_model`` arguments (e.g. a tiny
            ``img_size``/``depth``/``embed_dim`` for tests).
    """

    def __init__(self,
                 model_name: str = 'vit_small_patch8_224.dino',
                 pretrained: bool = True,
                 weights_path: Optional[str] = None,
                 block_indices: Sequence[int] = (2, 5, 8, 11),
                 head_channels: Optional[int] = None,
                 kernel_size: int = 9,
                 input_size: int = 224,
                 model_kwargs: Optional[dict] = None) -> None:
        super().__init__()
        indices = [int(i) for i in block_indices]
        if not indices or any(b <= a for a, b in zip(indices, indices[1:])) \
                or indices[0] < 0:
            raise ValueError('block_indices must be non-empty, >= 0 and '
                             f'strictly increasing, got {block_indices}')
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd and >= 1, got '
                             f'{kernel_size}')
        if head_channels is not None and head_channels < 1:
            raise ValueError(f'head_channels must be >= 1, got '
                             f'{head_channels}')
        if input_size < 1:
            raise ValueError(f'input_size must be >= 1, got {input_size}')
        self.feature_net = self._build_feature_net(
            model_name, pretrained, weights_path, model_kwargs)
        net = self.feature_net
        if not (hasattr(net, 'forward_intermediates')
                and isinstance(getattr(net, 'blocks', None), nn.Sequential)):
            raise ValueError(f'model_name={model_name!r} is not a timm ViT '
                             'with blocks and forward_intermediates')
        depth = len(net.blocks)
        if indices[-1] >= depth:
            raise ValueError(f'block_indices {indices} exceed the depth '
                             f'{depth} of {model_name!r}')
        img_size = getattr(net.patch_embed, 'img_size', None)
        if img_size is not None and tuple(img_size) != (input_size,
                                                        input_size):
            raise ValueError(f'input_size={input_size} differs from the '
                             f'ViT img_size {tuple(img_size)}')
        patch = net.patch_embed.patch_size
        if input_size % patch[0] or input_size % patch[1]:
            raise ValueError(f'input_size={input_size} is not a multiple of '
                             f'the patch size {tuple(patch)}')
        # Drop the blocks after the last tapped one, the final norm and head.
        net.prune_intermediate_layers(indices, prune_norm=True,
                                      prune_head=True)
        net.requires_grad_(False)
        net.eval()

        self.block_indices = indices
        self.input_size = int(input_size)
        self.num_tokens = (input_size // patch[0]) * (input_size // patch[1])
        width = net.embed_dim
        channels = head_channels or width
        self.heads = nn.ModuleList(
            TokenHead(width, channels, kernel_size) for _ in indices)
        # The model's own input statistics (ImageNet mean/std for DINO).
        cfg = getattr(net, 'pretrained_cfg', None) or {}
        mean = cfg.get('mean') or IMAGENET_DEFAULT_MEAN
        std = cfg.get('std') or IMAGENET_DEFAULT_STD
        self.register_buffer('mean', torch.tensor(mean).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor(std).view(1, 3, 1, 1),
                             persistent=False)

    @staticmethod
    def _build_feature_net(model_name: str, pretrained: bool,
                           weights_path: Optional[str],
                           model_kwargs: Optional[dict]) -> nn.Module:
        check_timm_name(model_name, 'DINODiscriminator')
        kwargs = dict(model_kwargs or {})
        kwargs.setdefault('num_classes', 0)
        if weights_path is not None:
            if not pretrained:
                raise ValueError('weights_path is given but pretrained=False')
            if not os.path.isfile(weights_path):
                raise MissingPretrainedWeightsError(
                    f'DINODiscriminator: weights_path={weights_path!r} does '
                    f'not exist; it should hold {_weights_hint(model_name)}.')
            kwargs['pretrained_cfg_overlay'] = dict(file=weights_path)
            return timm.create_model(model_name, pretrained=True, **kwargs)
        try:
            return timm.create_model(model_name, pretrained=pretrained,
                                     **kwargs)
        except OSError as err:  # offline: hub / download failures
            if not pretrained:
                raise
            raise MissingPretrainedWeightsError(
                f'DINODiscriminator could not load the pretrained weights of '
                f'timm model {model_name!r} ({type(err).__name__}: {err}). '
                f'Download {_weights_hint(model_name)} and pass '
                'weights_path=<that file>, or put it in the Hugging Face '
                'cache ($HF_HOME/hub). Tests use pretrained=False.') from err

    def train(self, mode: bool = True) -> 'DINODiscriminator':
        """Set the heads' mode; the feature network stays in eval mode."""
        super().train(mode)
        self.feature_net.eval()
        return self

    def features(self, images: torch.Tensor) -> List[torch.Tensor]:
        """Tapped patch tokens, one ``[B, C, N]`` tensor per chosen block.

        Args:
            images: ``[B, 3, H, W]`` in ``[0, 1]``.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError('images must be [B, 3, H, W], got '
                             f'{tuple(images.shape)}')
        x = images
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size),
                              mode='bicubic', align_corners=False)
        x = (x - self.mean) / self.std
        tokens = self.feature_net.forward_intermediates(
            x, indices=self.block_indices, norm=False, stop_early=True,
            output_fmt='NLC', intermediates_only=True)
        return [t.transpose(1, 2) for t in tokens]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of all heads, concatenated.

        Args:
            images: ``[B, 3, H, W]`` in ``[0, 1]`` (augmented by the caller,
                e.g. with :class:`DiffAug`).

        Returns:
            ``[B, len(block_indices) * num_tokens]`` logits.
        """
        logits = [head(t) for head, t in zip(self.heads,
                                              self.features(images))]
        return torch.cat(logits, dim=1)
