"""Differentiable augmentation (DiffAugment) for the discriminator's inputs.

Real and generated images each pass through a fresh draw of the same
augmentations, so the discriminator never sees un-augmented images and the
generator gets gradients through the augmentation. The magnitudes are the
public DiffAugment ones (Zhao et al. 2020), which are defined for images in
``[-1, 1]`` (RAE applies them there too); images here are in ``[0, 1]``, so
the module maps them to ``[-1, 1]``, augments, and maps back:

* color: brightness ``+ U(-0.5, 0.5)``, then saturation (scale about the
  per-pixel channel mean by ``U(0, 2)``), then contrast (scale about the
  image mean by ``U(0.5, 1.5)``), one draw per image;
* translation: shift by an integer in ``[-s, s]`` pixels per axis and image,
  ``s = round(ratio * size)``, filling with 0 in ``[-1, 1]`` (mid grey).
"""
from typing import List, Optional

import torch
from torch import nn

from decq_plugin.registry import MODELS

_POLICIES = ('color', 'translation')


def _rand(shape: tuple, like: torch.Tensor,
          generator: Optional[torch.Generator]) -> torch.Tensor:
    """Uniform ``[0, 1)`` draws from ``generator`` on ``like``'s device."""
    device = generator.device if generator is not None else like.device
    out = torch.rand(shape, generator=generator, device=device)
    return out.to(device=like.device, dtype=like.dtype)


def _color(x: torch.Tensor,
           generator: Optional[torch.Generator]) -> torch.Tensor:
    """Brightness, saturation, contrast of ``x`` [B, C, H, W] in [-1, 1]."""
    u = _rand((3, x.shape[0], 1, 1, 1), x, generator)
    x = x + (u[0] - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (u[1] * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (u[2] + 0.5) + mean


def _translation(x: torch.Tensor, ratio: float,
                 generator: Optional[torch.Generator]) -> torch.Tensor:
    """Integer shift per image, zero fill; ``x`` is ``[B, C, H, W]``.

    ``out[b, :, i, j] = x[b, :, i + dy_b, j + dx_b]`` (0 outside the image).
    """
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if sh == 0 and sw == 0:
        return x
    device = generator.device if generator is not None else x.device
    dy = torch.randint(-sh, sh + 1, (b, ), generator=generator,
                       device=device).to(x.device)
    dx = torch.randint(-sw, sw + 1, (b, ), generator=generator,
                       device=device).to(x.device)
    padded = nn.functional.pad(x, (sw, sw, sh, sh))
    rows = torch.arange(h, device=x.device) + sh + dy[:, None]  # [B, H]
    cols = torch.arange(w, device=x.device) + sw + dx[:, None]  # [B, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None],
                                     cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


@MODELS.register_module()
class DiffAug(nn.Module):
    """DiffAugment applied in the order of ``policy``.

    Args:
        policy: comma-separated subset of ``color``, ``translation``
            (empty string: identity).
        translation_ratio: maximal shift as a fraction of the image side.
    """

    def __init__(self, policy: str = 'color,translation',
                 translation_ratio: float = 0.125) -> None:
        super().__init__()
        names: List[str] = [p.strip() for p in policy.split(',') if p.strip()]
        unknown = [p for p in names if p not in _POLICIES]
        if unknown:
            raise ValueError(f'policy has unknown entries {unknown}; '
                             f'choose from {_POLICIES}')
        if not 0 <= translation_ratio < 0.5:
            raise ValueError('translation_ratio must be in [0, 0.5), got '
                             f'{translation_ratio}')
        self.policy = names
        self.translation_ratio = float(translation_ratio)

    def forward(self, images: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Augment a batch; one independent draw per image and call.

        Args:
            images: ``[B, 3, H, W]``, roughly in ``[0, 1]``.
            generator: optional source of randomness (any device).

        Returns:
            Augmented images ``[B, 3, H, W]`` in the same range convention;
            differentiable with respect to ``images``.
        """
        if images.dim() != 4:
            raise ValueError('images must be [B, C, H, W], got '
                             f'{tuple(images.shape)}')
        x = images * 2 - 1
        for name in self.policy:
            if name == 'color':
                x = _color(x, generator)
            else:
                x = _translation(x, self.translation_ratio, generator)
        return (x + 1) / 2

    def extra_repr(self) -> str:
        return (f"policy='{','.join(self.policy)}', "
                f'translation_ratio={self.translation_ratio}')
