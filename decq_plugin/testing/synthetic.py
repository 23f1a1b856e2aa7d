"""Tiny synthetic inputs of the right layout for smoke runs.

* :func:`make_imagenet_folder`: ``root/{train,val}/<wnid>/*.JPEG``;
* :func:`make_reference_npz`: an ADM-style reference batch (``arr_0``
  uint8 [N, H, W, 3]);
* :func:`save_module_checkpoint`: a module's weights as a runner
  checkpoint (``{'meta': {}, 'state_dict': {'<prefix>.<name>': ...}}``),
  plain tensors only, loadable with ``torch.load(weights_only=True)``.
"""
import os
import os.path as osp
from typing import Optional

import numpy as np
import torch
from torch import nn

WNIDS = ('n01440764', 'n01443537', 'n01484850', 'n01491361', 'n01494475',
         'n01496331', 'n01498041', 'n01514668')


def _photo_like(rng: np.random.Generator, height: int,
                width: int) -> np.ndarray:
    """A smooth random RGB image (uint8 [H, W, 3]): gradients plus blobs, so
    that crops and reconstructions are not pure noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        a, b, phase = rng.uniform(-1, 1, 3)
        image[..., c] = 0.5 + 0.25 * np.sin(
            (a * xx / width + b * yy / height) * 2 * np.pi + phase * 3)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(0.1, 0.4) * min(height, width)
        blob = np.exp(-((yy - cy)**2 + (xx - cx)**2) / (2 * radius**2))
        image[..., c] += rng.uniform(-0.4, 0.4) * blob
    image += rng.normal(0, 0.02, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def make_imagenet_folder(root: str, num_classes: int = 4,
                         train_per_class: int = 1, val_per_class: int = 1,
                         size: int = 112, seed: int = 0) -> str:
    """Write a tiny ImageNet-layout folder; returns ``root``.

    Images are ``size`` x ``size * 5 // 4`` JPEGs (not square, as ImageNet's
    are not). An existing complete folder is kept.
    """
    from PIL import Image
    if num_classes > len(WNIDS):
        raise ValueError(f'num_classes must be <= {len(WNIDS)}, got '
                         f'{num_classes}')
    done = osp.join(root, '.complete')
    if osp.isfile(done):
        return root
    rng = np.random.default_rng(seed)
    for split, per_class in (('train', train_per_class),
                             ('val', val_per_class)):
        for wnid in WNIDS[:num_classes]:
            folder = osp.join(root, split, wnid)
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                pixels = _photo_like(rng, size, size * 5 // 4)
                Image.fromarray(pixels).save(
                    osp.join(folder, f'{wnid}_{i}.JPEG'), quality=95)
    with open(done, 'w', encoding='utf-8') as f:
        f.write('ok\n')
    return root


def make_reference_npz(path: str, num_images: int = 8, size: int = 64,
                       seed: int = 1) -> str:
    """An ADM-style reference batch ``arr_0`` uint8 [N, size, size, 3]."""
    rng = np.random.default_rng(seed)
    images = np.stack([_photo_like(rng, size, size)
                       for _ in range(num_images)])
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    np.savez(path, arr_0=images)
    return path


def save_module_checkpoint(module: nn.Module, path: str,
                           prefix: Optional[str] = None) -> str:
    """Save ``module``'s state dict as a runner checkpoint under
    ``'<prefix>.'`` keys (none when ``prefix`` is None)."""
    head = f'{prefix}.' if prefix else ''
    state = {head + k: v.detach().cpu().clone()
             for k, v in module.state_dict().items()}
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    torch.save({'meta': {}, 'state_dict': state}, path)
    return path
