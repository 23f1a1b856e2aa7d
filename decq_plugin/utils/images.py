"""Images in [0,1] -> 8-bit levels; image grids as uint8 arrays and PNGs.

8-bit conversion follows the ADM and RAE samplers by default: truncation,
``(x.clamp(0, 1) * 255).to(uint8)`` in float32 (a value just under a level
goes down to it); ``'round'`` picks the nearest level instead (at most one
level higher, on about half of the pixels of a generated image).
"""
import os
import os.path as osp

import numpy as np
import torch
from PIL import Image


ROUNDING_MODES = ('truncate', 'round')


def to_uint8(images: torch.Tensor, rounding: str = 'truncate') -> torch.Tensor:
    """Images in [0, 1] (any shape, any float dtype) -> uint8 levels of the
    same shape; values outside [0, 1] are clamped first."""
    if rounding not in ROUNDING_MODES:
        raise ValueError(f'rounding must be one of {ROUNDING_MODES}, got '
                         f'{rounding!r}')
    scaled = images.detach().float().clamp(0, 1) * 255
    if rounding == 'round':
        scaled = scaled.round()
    return scaled.to(torch.uint8)


def make_grid_uint8(images: torch.Tensor, nrow: int = 8,
                    padding: int = 2) -> np.ndarray:
    """``[N,3,H,W]`` in [0,1] -> one ``[rows*(H+p)+p, ..., 3]`` uint8 grid
    (HWC), ``nrow`` images per row, white padding."""
    from torchvision.utils import make_grid
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError('images must be [N, 3, H, W], got '
                         f'{tuple(images.shape)}')
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow,
                     padding=padding, pad_value=1.0)
    return (grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy())


def save_image_grid(images: torch.Tensor, path: str, nrow: int = 8,
                    padding: int = 2) -> np.ndarray:
    """Write :func:`make_grid_uint8` to ``path`` (PNG) and return it."""
    grid = make_grid_uint8(images, nrow, padding)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(grid).save(path)
    return grid
