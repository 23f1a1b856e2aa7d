"""Image transforms: a PIL image in, a float tensor ``[3, H, W]`` in [0, 1]
out.

These are plain callables (not mmcv dict transforms): a dataset reads a file,
converts it with :func:`pil_to_rgb` and calls ``transform(img)``. The classes
are registered in ``TRANSFORMS`` so a config can write
``transform=dict(type='RAETrainCrop', resize=384, crop=256)``.

Randomness comes from the ``generator`` passed to ``__call__`` or, when none is
given, from torch's global RNG. MMEngine seeds that RNG (``randomness=dict(
seed=...)``) and the DataLoader gives every worker its own torch seed, so runs
are reproducible and workers draw different crops.
"""
import math
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from decq_plugin.registry import TRANSFORMS

ImageTransform = Callable[[Image.Image], torch.Tensor]

_SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N')


def pil_to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB.

    Grayscale is replicated to three channels; alpha is dropped; palette
    images with transparency go through RGBA first; CMYK/YCbCr use PIL's
    conversion; 16-bit grayscale is scaled by 1/257 (PIL alone would clip it).
    """
    if img.mode == 'RGB':
        return img
    if img.mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img).astype(np.float32) / 257.0
        img = Image.fromarray(np.round(arr).astype(np.uint8), mode='L')
    elif img.mode == 'P' and 'transparency' in img.info:
        img = img.convert('RGBA')
    return img.convert('RGB')


def to_tensor01(img: Image.Image) -> torch.Tensor:
    """8-bit PIL image -> float32 tensor ``[3, H, W]`` in [0, 1], RGB."""
    arr = np.asarray(pil_to_rgb(img), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def check_positive_int(value: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f'{name} must be a positive int, got {value!r}')


def _randint(high: int, generator: Optional[torch.Generator]) -> int:
    """Uniform int in [0, high) from ``generator`` or torch's global RNG."""
    return int(torch.randint(high, (1,), generator=generator).item())


def _uniform(low: float, high: float,
             generator: Optional[torch.Generator]) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so that ``min(W, H) == size``; the longer side is
    ``int(size * long / short)`` (truncated, like torchvision's ``Resize``)."""
    check_positive_int(size, 'size')
    w, h = img.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    if new == (w, h):
        return img
    return img.resize(new, resample=Image.BICUBIC)


def box_downsample(img: Image.Image, size: int) -> Image.Image:
    """Halve both sides with a BOX filter (``(W // 2, H // 2)``) while
    ``min(W, H) >= 2 * size``; the short side ends in ``[size, 2 * size)``
    unless it started below ``size``."""
    while min(img.size) >= 2 * size:
        img = img.resize((img.width // 2, img.height // 2),
                         resample=Image.BOX)
    return img


def adm_center_crop(img: Image.Image, size: int) -> Image.Image:
    """The ADM (guided-diffusion) centre crop: PIL image -> ``size x size``
    PIL RGB image.

    1. While ``min(W, H) >= 2 * size``: BOX-downsample to ``(W // 2, H // 2)``.
    2. BICUBIC resize by ``size / min(W, H)``, each side rounded.
    3. Crop the centre square at ``((W - size) // 2, (H - size) // 2)``.

    Returns a PIL image (exact uint8 values, as the ADM reference batches
    hold); :class:`AdmCenterCrop` wraps it and returns a tensor.
    """
    check_positive_int(size, 'size')
    img = box_downsample(pil_to_rgb(img), size)
    scale = size / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)),
                     resample=Image.BICUBIC)
    left = (img.width - size) // 2
    top = (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


@TRANSFORMS.register_module()
class ToTensor01:
    """No geometry change: PIL image -> float ``[3, H, W]`` in [0, 1]."""

    def __call__(self, img: Image.Image,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return to_tensor01(img)

    def __repr__(self) -> str:
        return 'ToTensor01()'


@TRANSFORMS.register_module()
class AdmCenterCrop:
    """Deterministic evaluation crop (SPEC section 3): :func:`adm_center_crop`
    then :func:`to_tensor01`. Output ``[3, size, size]`` in [0, 1]."""

    def __init__(self, size: int = 256) -> None:
        check_positive_int(size, 'size')
        self.size = size

    def __call__(self, img: Image.Image,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return to_tensor01(adm_center_crop(img, self.size))

    def __repr__(self) -> str:
        return f'AdmCenterCrop(size={self.size})'


@TRANSFORMS.register_module()
class RAETrainCrop:
    """Stage-1 training crop (SPEC section 1): resize the shorter side to
    ``resize`` (bicubic), take a random ``crop x crop`` window, flip it
    horizontally with probability 0.5 when ``hflip``.

    Output ``[3, crop, crop]`` float in [0, 1].
    """

    def __init__(self, resize: int = 384, crop: int = 256,
                 hflip: bool = True) -> None:
        check_positive_int(resize, 'resize')
        check_positive_int(crop, 'crop')
        if crop > resize:
            raise ValueError(
                f'crop ({crop}) must not exceed resize ({resize})')
        self.resize = resize
        self.crop = crop
        self.hflip = bool(hflip)

    def __call__(self, img: Image.Image,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        img = resize_shorter_side(pil_to_rgb(img), self.resize)
        top = _randint(img.height - self.crop + 1, generator)
        left = _randint(img.width - self.crop + 1, generator)
        img = img.crop((left, top, left + self.crop, top + self.crop))
        if self.hflip and _randint(2, generator) == 1:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return to_tensor01(img)

    def __repr__(self) -> str:
        return (f'RAETrainCrop(resize={self.resize}, crop={self.crop}, '
                f'hflip={self.hflip})')


@TRANSFORMS.register_module()
class RandomResizedCropFlip:
    """Random crop of a random area fraction and aspect ratio, resized
    (bicubic) to ``size x size``, then a random horizontal flip.

    Args:
        size: output side.
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio (width / height); sampled
            log-uniformly.
        hflip: flip with probability 0.5.

    Output ``[3, size, size]`` float in [0, 1]. After 10 rejected draws the
    largest centred crop inside ``ratio`` is used.
    """

    def __init__(self, size: int, scale: Sequence[float] = (0.25, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3),
                 hflip: bool = True) -> None:
        check_positive_int(size, 'size')
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f'scale must be (low, high) with '
                             f'0 < low <= high <= 1, got {scale!r}')
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f'ratio must be (low, high) with '
                             f'0 < low <= high, got {ratio!r}')
        self.size = size
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.hflip = bool(hflip)

    def crop_box(self, width: int, height: int,
                 generator: Optional[torch.Generator] = None
                 ) -> Tuple[int, int, int, int]:
        """Sample a crop ``(left, top, right, bottom)`` in a WxH image."""
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * _uniform(*self.scale, generator)
            aspect = math.exp(_uniform(log_lo, log_hi, generator))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = _randint(height - h + 1, generator)
                left = _randint(width - w + 1, generator)
                return left, top, left + w, top + h
        aspect = min(max(width / height, self.ratio[0]), self.ratio[1])
        w = min(width, round(height * aspect))
        h = min(height, round(w / aspect))
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def __call__(self, img: Image.Image,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        img = pil_to_rgb(img)
        box = self.crop_box(img.width, img.height, generator)
        img = img.resize((self.size, self.size), resample=Image.BICUBIC,
                         box=box)
        if self.hflip and _randint(2, generator) == 1:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return to_tensor01(img)

    def __repr__(self) -> str:
        return (f'RandomResizedCropFlip(size={self.size}, scale={self.scale},'
                f' ratio={self.ratio}, hflip={self.hflip})')


def build_transform(transform: Union[None, dict, ImageTransform],
                    default: ImageTransform) -> ImageTransform:
    """Turn a config dict, a callable or ``None`` (-> ``default``) into an
    image transform."""
    if transform is None:
        return default
    if isinstance(transform, dict):
        return TRANSFORMS.build(transform)
    if callable(transform):
        return transform
    raise TypeError('transform must be None, a config dict or a callable, '
                    f'got {type(transform).__name__}')
