"""The interface every frozen vision-foundation-model (VFM) encoder offers.

An encoder maps images ``[B, 3, H, W]`` in ``[0, 1]`` to patch tokens
``[B, N, C]``. On the way it resizes (bicubic) to the VFM input size,
normalises with the VFM's mean/std, runs the VFM's blocks, drops the prefix
(CLS / register) tokens and applies the final LayerNorm *without* its affine
weight and bias. Its :attr:`blocks` are exposed so condensers can attach
forward hooks to them without editing the VFM.
"""
from contextlib import nullcontext
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MissingPretrainedWeightsError(FileNotFoundError):
    """Raised when pretrained weights are asked for but cannot be had."""


class VFMEncoder(nn.Module):
    """Base class of the frozen VFM adapters.

    Subclasses build the VFM and implement :meth:`_embed` (patch embedding
    plus prefix tokens and position embedding) and :attr:`blocks`.

    Args:
        input_size: side of the square VFM input, e.g. 224.
        patch_size: the VFM's patch size, e.g. 14.
        embed_dim: token width C, e.g. 768.
        num_prefix_tokens: CLS + register tokens in front of the patches.
        frozen: freeze every parameter, keep eval mode and run without
            autograd (condenser hooks still build their own graph).
        mean, std: input normalisation.
        antialias: anti-alias the bicubic resize.
        norm_eps: epsilon of the final affine-free LayerNorm.
    """

    def __init__(self,
                 input_size: int,
                 patch_size: int,
                 embed_dim: int,
                 num_prefix_tokens: int,
                 frozen: bool = True,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD,
                 antialias: bool = False,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f'input_size={input_size} must be a multiple of '
                             f'patch_size={patch_size}')
        if len(mean) != 3 or len(std) != 3:
            raise ValueError('mean and std need three values each')
        self.input_size = int(input_size)
        self.patch_size = int(patch_size)
        self.embed_dim = int(embed_dim)
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.frozen = bool(frozen)
        self.antialias = bool(antialias)
        self.norm_eps = float(norm_eps)
        self.register_buffer(
            'mean', torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer(
            'std', torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    # -- what subclasses provide -------------------------------------------
    @property
    def blocks(self) -> Sequence[nn.Module]:
        """The VFM's transformer blocks, in depth order."""
        raise NotImplementedError

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images ``[B,3,S,S]`` -> tokens ``[B, P+N, C]``
        (prefix first) ready for the first block."""
        raise NotImplementedError

    # -- shared behaviour ----------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def grid_size(self) -> Tuple[int, int]:
        """Patch grid (h, w) of the encoder output."""
        side = self.input_size // self.patch_size
        return side, side

    @property
    def num_patches(self) -> int:
        h, w = self.grid_size
        return h * w

    def freeze(self) -> None:
        """Freeze every parameter of the VFM and switch it to eval mode."""
        self.frozen = True
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> 'VFMEncoder':
        # A frozen VFM stays in eval mode whatever its parent does.
        return super().train(mode and not self.frozen)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in [0,1] -> resized, normalised ``[B,3,S,S]``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError('images must be [B, 3, H, W], got '
                             f'{tuple(images.shape)}')
        size = (self.input_size, self.input_size)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(
                images, size=size, mode='bicubic', align_corners=False,
                antialias=self.antialias)
        return (images - self.mean) / self.std

    def split_prefix(
            self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``[B, P+N, C]`` -> (prefix ``[B,P,C]``, patches ``[B,N,C]``)."""
        p = self.num_prefix_tokens
        return tokens[:, :p], tokens[:, p:]

    def final_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """The VFM's last LayerNorm without its affine weight and bias."""
        return F.layer_norm(tokens, (tokens.shape[-1], ), eps=self.norm_eps)

    def forward_blocks(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0,1] -> output of the last block ``[B, P+N, C]``.

        Every block's forward hooks fire, in depth order."""
        x = self._embed(self.preprocess(images))
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B,3,H,W]`` in [0,1] -> patch tokens ``[B, N, C]``."""
        ctx = torch.no_grad() if self.frozen else nullcontext()
        with ctx:
            tokens = self.forward_blocks(images)
            return self.final_norm(self.split_prefix(tokens)[1])

    def tokens_to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, C]`` -> ``[B, C, h, w]``."""
        h, w = self.grid_size
        if tokens.shape[1] != h * w:
            raise ValueError(f'expected {h * w} patch tokens, got '
                             f'{tokens.shape[1]}')
        return rearrange(tokens, 'b (h w) c -> b c h w', h=h, w=w)


def check_block_indices(indices: Sequence[int], num_blocks: int,
                        name: str = 'layers') -> List[int]:
    """Validate 0-indexed block indices (negative ones count from the end)."""
    out = []
    for i in indices:
        j = i + num_blocks if i < 0 else i
        if not 0 <= j < num_blocks:
            raise ValueError(f'{name}: block index {i} is out of range for a '
                             f'VFM with {num_blocks} blocks')
        out.append(j)
    if len(set(out)) != len(out):
        raise ValueError(f'{name}: repeated block index in {list(indices)}')
    return sorted(out)
