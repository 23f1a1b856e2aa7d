"""Datasets over folders of image files, and ImageNet in its foldered layout.

Items (COMMON convention)::

    dict(inputs=Tensor[3, H, W] float in [0, 1],
         data_samples=dict(gt_label=int, img_path=str))

so ``collate_fn=dict(type='default_collate')`` gives ``inputs`` [B, 3, H, W],
``gt_label`` [B] and ``img_path`` a list of strings.

Every image is converted to 8-bit RGB (grayscale, palette, CMYK, alpha and
16-bit files included). A file that cannot be decoded raises
:class:`CorruptImageError` naming it; with ``skip_corrupt=True`` a warning
naming it is logged and the next readable image (in file order) is returned.
"""
import inspect
import logging
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from mmengine.logging import print_log
from PIL import Image
from torch.utils.data import Dataset

from decq_plugin.registry import DATASETS
from .sample_seed import sample_generator, seed_everything_for
from .transforms import (AdmCenterCrop, RAETrainCrop, build_transform,
                         pil_to_rgb)

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff',
                  '.ppm', '.pgm', '.gif')

_FOLDER_LAYOUT = ('data_root/**/*.<ext> (unlabelled), or data_root/<class>/'
                  '**/*.<ext> with labelled=True')
_IMAGENET_LAYOUT = ('data_root/train/<wnid>/*.JPEG and data_root/val/<wnid>/'
                    '*.JPEG, e.g. data_root/val/n01440764/'
                    'ILSVRC2012_val_00000293.JPEG (a flat val/ folder must '
                    'first be sorted into val/<wnid>/ sub-folders)')


class CorruptImageError(RuntimeError):
    """An image file could not be read or decoded; ``path`` names it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f'cannot read image file {path}: {reason}')
        self.path = path


def load_rgb_image(path: str) -> Image.Image:
    """Open, fully decode and convert ``path`` to RGB.

    Raises:
        CorruptImageError: the file is missing, truncated or not an image.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return pil_to_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            EOFError) as err:
        raise CorruptImageError(path, f'{type(err).__name__}: {err}') from err


def _list_images(folder: str, extensions: Tuple[str, ...],
                 recursive: bool) -> List[str]:
    """Sorted paths of the files in ``folder`` whose suffix is in
    ``extensions`` (case-insensitive); hidden files and folders skipped."""
    found = []
    for entry in os.scandir(folder):
        if entry.name.startswith('.'):
            continue
        if entry.is_dir():
            if recursive:
                found.extend(_list_images(entry.path, extensions, True))
        elif entry.name.lower().endswith(extensions):
            found.append(entry.path)
    return sorted(found)


def _check_extensions(extensions: Sequence[str]) -> Tuple[str, ...]:
    if isinstance(extensions, str) or not extensions:
        raise ValueError('extensions must be a non-empty sequence of '
                         f'suffixes such as (".png",), got {extensions!r}')
    return tuple(e.lower() if e.startswith('.') else '.' + e.lower()
                 for e in extensions)


@DATASETS.register_module()
class ImageFolderDataset(Dataset):
    """Any folder of images.

    Args:
        data_root: the folder.
        transform: PIL image -> Tensor[3, H, W]; a config dict for
            ``TRANSFORMS`` or a callable. Default ``AdmCenterCrop(256)``.
        extensions: file suffixes to read (case-insensitive).
        recursive: also read sub-folders.
        labelled: the first-level sub-folders are classes, indexed in sorted
            name order; images directly under ``data_root`` are then an
            error. Unlabelled folders are one class: ``gt_label == 0``.
        skip_corrupt: log a warning and return the next readable image
            instead of raising :class:`CorruptImageError`.
        indices: keep only these positions of the sorted file list.
        max_samples: keep only the first ``max_samples`` (after ``indices``).
    """

    layout = _FOLDER_LAYOUT

    def __init__(self,
                 data_root: str,
                 transform: Union[None, dict, Callable] = None,
                 extensions: Sequence[str] = IMG_EXTENSIONS,
                 recursive: bool = True,
                 labelled: bool = False,
                 skip_corrupt: bool = False,
                 indices: Optional[Sequence[int]] = None,
                 max_samples: Optional[int] = None) -> None:
        super().__init__()
        if not isinstance(data_root, (str, os.PathLike)):
            raise TypeError('data_root must be a path, got '
                            f'{type(data_root).__name__}')
        data_root = os.fspath(data_root)
        if not osp.isdir(data_root):
            raise FileNotFoundError(
                f'data_root {data_root!r} is not a folder; expected layout: '
                f'{self.layout}')
        if max_samples is not None and (not isinstance(max_samples, int)
                                        or max_samples <= 0):
            raise ValueError('max_samples must be a positive int or None, '
                             f'got {max_samples!r}')
        self.data_root = data_root
        self.extensions = _check_extensions(extensions)
        self.recursive = bool(recursive)
        self.labelled = bool(labelled)
        self.skip_corrupt = bool(skip_corrupt)
        self.transform = build_transform(transform, self.default_transform())

        samples, self.classes = self._scan()
        if not samples:
            raise FileNotFoundError(
                f'no image files ({", ".join(self.extensions)}) found in '
                f'{data_root!r}; expected layout: {self.layout}')
        if indices is not None:
            bad = [i for i in indices if not 0 <= int(i) < len(samples)]
            if bad:
                raise IndexError(f'indices {bad[:5]} out of range for '
                                 f'{len(samples)} images in {data_root!r}')
            samples = [samples[int(i)] for i in indices]
        if max_samples is not None:
            samples = samples[:max_samples]
        self.samples: List[Tuple[str, int]] = samples

    def default_transform(self) -> Callable:
        return AdmCenterCrop(256)

    def _scan(self) -> Tuple[List[Tuple[str, int]], List[str]]:
        """Return ``[(path, label), ...]`` and the sorted class names."""
        if not self.labelled:
            paths = _list_images(self.data_root, self.extensions,
                                 self.recursive)
            return [(p, 0) for p in paths], []
        loose = _list_images(self.data_root, self.extensions, False)
        if loose:
            raise ValueError(
                f'labelled=True but {len(loose)} images lie directly in '
                f'{self.data_root!r} (e.g. {loose[0]}); expected layout: '
                f'{self.layout}')
        classes = sorted(e.name for e in os.scandir(self.data_root)
                         if e.is_dir() and not e.name.startswith('.'))
        samples = []
        for label, name in enumerate(classes):
            folder = osp.join(self.data_root, name)
            samples += [(p, label) for p in
                        _list_images(folder, self.extensions, self.recursive)]
        return samples, classes

    @property
    def metainfo(self) -> Dict[str, tuple]:
        return dict(classes=tuple(self.classes))

    def __len__(self) -> int:
        return len(self.samples)

    def _transform(self, img: Image.Image, index: int):
        """The transform of ``img``, seeded per sample when ``index`` is
        a :class:`SeededIndex` (through its ``generator`` argument, or the
        global RNGs for a transform without one)."""
        generator = sample_generator(index)
        if generator is None:
            return self.transform(img)
        if 'generator' in inspect.signature(self.transform).parameters:
            return self.transform(img, generator=generator)
        seed_everything_for(index)
        return self.transform(img)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f'index {index} out of range for {len(self)}')
        for attempt in range(len(self.samples)):
            path, label = self.samples[(index + attempt) % len(self.samples)]
            try:
                img = load_rgb_image(path)
            except CorruptImageError as err:
                if not self.skip_corrupt:
                    raise
                print_log(f'skip_corrupt: {err}; using the next image',
                          logger='current', level=logging.WARNING)
                continue
            return dict(inputs=self._transform(img, index),
                        data_samples=dict(gt_label=label, img_path=path))
        raise RuntimeError(f'no image in {self.data_root!r} could be read; '
                           'see the warnings above')

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(data_root={self.data_root!r}, '
                f'num_samples={len(self)}, num_classes={len(self.classes)}, '
                f'transform={self.transform!r})')


@DATASETS.register_module()
class ImageNetDataset(ImageFolderDataset):
    """ImageNet-1k in the foldered layout::

        data_root/train/n01440764/n01440764_10026.JPEG
        data_root/val/n01440764/ILSVRC2012_val_00000293.JPEG

    The class index is the position of the wnid in sorted order (the usual
    0..999 ImageNet labels). A flat ``val/`` folder (all 50k files together)
    is not read: sort it into ``val/<wnid>/`` first (for instance with the
    widely used ``valprep.sh`` script).

    Args:
        data_root: folder holding ``train/`` and/or ``val/``.
        split: ``'train'`` or ``'val'``.
        transform: default ``RAETrainCrop()`` for train, ``AdmCenterCrop(256)``
            for val.
        **kwargs: the other :class:`ImageFolderDataset` options
            (``skip_corrupt``, ``indices``, ``max_samples``, ``extensions``).
    """

    layout = _IMAGENET_LAYOUT

    def __init__(self, data_root: str, split: str = 'train',
                 transform: Union[None, dict, Callable] = None,
                 **kwargs) -> None:
        if split not in ('train', 'val'):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        for name in ('labelled', 'recursive'):
            if name in kwargs:
                raise TypeError(f'ImageNetDataset sets {name} itself')
        self.split = split
        super().__init__(osp.join(os.fspath(data_root), split),
                         transform=transform, labelled=True, recursive=True,
                         **kwargs)

    def default_transform(self) -> Callable:
        return RAETrainCrop() if self.split == 'train' else AdmCenterCrop(256)
