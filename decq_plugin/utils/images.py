"""Image grids: tensors in [0,1] -> uint8 arrays and PNG files."""
import os
import os.path as osp

import numpy as np
import torch
from PIL import Image


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
