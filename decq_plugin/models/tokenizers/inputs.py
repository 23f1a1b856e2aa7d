"""What the tokenizer API accepts, checked with messages that say how to fix
a wrong input.

Images are float ``[B, 3, S, S]`` in ``[0, 1]`` with ``S`` the tokenizer's
``image_size`` (the side its decoder reconstructs). Other sizes are refused
rather than resized: a tokenizer's reconstruction always has ``S x S``
pixels, so an input of another size could not be compared with it. Crop or
resize first: PIL images with
``decq_plugin.datasets.transforms.AdmCenterCrop(S)`` (what the datasets and
tools use), tensors with ``torch.nn.functional.interpolate``.

The layout checks read only tensor metadata (no device synchronisation).
The value-range check reads the minimum and maximum, one synchronisation
per call on a GPU: the public ``encode`` / ``reconstruct`` run it, the
training passes (``forward``, ``encode_raw``) do not.
"""
from typing import Dict, Mapping, Tuple

import torch

# How far outside [0, 1] pixel values may lie (rounding, resampling).
RANGE_TOLERANCE = 1e-2


def check_image_layout(images: torch.Tensor, image_size: int) -> None:
    """Raise ``TypeError`` / ``ValueError`` unless ``images`` is a float
    ``[B, 3, image_size, image_size]`` tensor (metadata only, no sync)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError('images must be a torch.Tensor [B, 3, H, W] in [0, 1]'
                        f', got {type(images).__name__}')
    if not images.is_floating_point():
        hint = (' (uint8 pixels: use images.float() / 255)'
                if images.dtype == torch.uint8 else '')
        raise TypeError(f'images must be a float tensor in [0, 1], got '
                        f'dtype {images.dtype}{hint}')
    if images.dim() != 4:
        hint = (' (one image: add the batch dimension with '
                'images.unsqueeze(0))' if images.dim() == 3 else '')
        raise ValueError(f'images must be [B, 3, H, W], got shape '
                         f'{tuple(images.shape)}{hint}')
    if images.shape[1] != 3:
        if images.shape[-1] == 3:
            hint = ' (channels last: use images.permute(0, 3, 1, 2))'
        elif images.shape[1] == 1:
            hint = ' (grey images: use images.expand(-1, 3, -1, -1))'
        elif images.shape[1] == 4:
            hint = ' (RGBA: drop the alpha channel, images[:, :3])'
        else:
            hint = ''
        raise ValueError(f'images must have 3 (RGB) channels in dim 1, got '
                         f'shape {tuple(images.shape)}{hint}')
    if tuple(images.shape[-2:]) != (image_size, image_size):
        raise ValueError(
            f'this tokenizer takes {image_size}x{image_size} images (the '
            f'size it reconstructs), got {images.shape[-2]}x'
            f'{images.shape[-1]}; centre-crop or resize them first: PIL '
            f'images with decq_plugin.datasets.transforms.AdmCenterCrop('
            f'{image_size}), tensors with torch.nn.functional.interpolate('
            f"images, size={image_size}, mode='bicubic', antialias=True)")


def check_image_range(images: torch.Tensor,
                      tolerance: float = RANGE_TOLERANCE) -> None:
    """Raise ``ValueError`` when pixel values leave ``[0, 1]`` by more than
    ``tolerance`` or are not finite (one device synchronisation)."""
    if images.numel() == 0:
        return
    low, high = (v.item() for v in torch.aminmax(images.detach()))
    if low >= -tolerance and high <= 1 + tolerance:
        return
    if low != low or high != high:  # NaN
        raise ValueError('images contain NaN')
    if high > 2:
        hint = ' ([0, 255] pixels: divide by 255)'
    elif low < -0.5:
        hint = ' ([-1, 1] pixels: use (images + 1) / 2)'
    else:
        hint = ' (clamp them: images.clamp(0, 1))'
    raise ValueError(f'images must lie in [0, 1], got values in '
                     f'[{low:.4g}, {high:.4g}]{hint}')


def check_latents(latents: Mapping[str, torch.Tensor],
                  latent_shapes: Dict[str, Tuple[int, ...]]) -> None:
    """Raise ``TypeError`` / ``ValueError`` unless ``latents`` holds exactly
    the keys of ``latent_shapes`` with per-sample shapes as given."""
    if not isinstance(latents, Mapping):
        raise TypeError("latents must be the dict encode() returns ({'patch'"
                        f": [B,C,h,w], ...}}), got {type(latents).__name__}")
    if set(latents) != set(latent_shapes):
        raise ValueError(f'latents must have the keys '
                         f'{sorted(latent_shapes)}, got {sorted(latents)}')
    batch = {v.shape[0] for v in latents.values()}
    for key, shape in latent_shapes.items():
        value = latents[key]
        if not value.is_floating_point() or \
                tuple(value.shape[1:]) != tuple(shape):
            raise ValueError(
                f"latents['{key}'] must be a float tensor [B, "
                f"{', '.join(map(str, shape))}], got {value.dtype} "
                f'{tuple(value.shape)}')
    if len(batch) > 1:
        raise ValueError('latents disagree on the batch size: '
                         f'{ {k: v.shape[0] for k, v in latents.items()} }')
