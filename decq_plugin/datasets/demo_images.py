"""The built-in demo dataset: real photos shipped inside installed packages.

Nothing is downloaded: the files are read with PIL straight from the package
folders (``skimage/data/*.png`` etc.), never through ``skimage.data``'s
fetcher, which would try the network for images missing from the wheel.
Each source photo is one class, so class-conditional generation has a few
labels; ``DemoImageDataset.classes`` lists them in label order.

Sources (name: file; licence as stated by the shipping package). The
skimage licences are in the docstrings of the ``skimage.data`` functions of
the same name (``help(skimage.data.astronaut)``, ``immunohistochemistry`` for
``ihc.png``); sklearn's in ``sklearn/datasets/images/README.txt``.

Default (colour photos; scikit-image and matplotlib, a dependency of
mmengine, are always installed with this package):

- ``astronaut``: ``skimage/data/astronaut.png``, NASA; public domain.
- ``coffee``: ``skimage/data/coffee.png``; CC0 (Rachel Michetti).
- ``chelsea``: ``skimage/data/chelsea.png``; CC0 (Stefan van der Walt).
- ``rocket``: ``skimage/data/rocket.jpg``, SpaceX; public domain.
- ``immunohistochemistry``: ``skimage/data/ihc.png``, CMMI; no known
  copyright restrictions.
- ``hubble_deep_field``: ``skimage/data/hubble_deep_field.jpg``, NASA;
  public domain.
- ``retina``: ``skimage/data/retina.jpg``, Mikael Haggstrom; CC0.
- ``grace_hopper``: ``matplotlib/mpl-data/sample_data/grace_hopper.jpg``,
  official U.S. Navy photograph of Grace Hopper; public domain as a work of
  the U.S. government (matplotlib ships it without a separate notice).

Optional, by name in ``sources``:

- grayscale skimage photos, replicated to RGB: ``camera`` (CC0, Lav
  Varshney), ``coins`` (Brooklyn Museum; no known copyright restrictions),
  ``brick``, ``grass``, ``gravel`` (CC0 textures).
- ``china``, ``flower``: scikit-learn's ``load_sample_images`` photos,
  CC BY 2.0 (flickr users danielbuechele and vultilion); need scikit-learn,
  which this package does not depend on.

Checked offline (socket connections refused, ``HF_HUB_OFFLINE=1``) with
scikit-image 0.26: all the files above ship in the wheel. Images such as
``eagle``, ``lily``, ``kidney``, ``cells3d`` are not shipped (skimage would
download them) and are not offered here.
"""
import importlib.resources
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import Dataset

from decq_plugin.registry import DATASETS
from .image_folder import load_rgb_image
from .sample_seed import sample_generator
from .transforms import (RandomResizedCropFlip, adm_center_crop,
                         box_downsample, check_positive_int, to_tensor01)

# name -> (package holding the file, path inside that package)
DEMO_SOURCES: Dict[str, Tuple[str, str]] = {
    'astronaut': ('skimage.data', 'astronaut.png'),
    'coffee': ('skimage.data', 'coffee.png'),
    'chelsea': ('skimage.data', 'chelsea.png'),
    'rocket': ('skimage.data', 'rocket.jpg'),
    'immunohistochemistry': ('skimage.data', 'ihc.png'),
    'hubble_deep_field': ('skimage.data', 'hubble_deep_field.jpg'),
    'retina': ('skimage.data', 'retina.jpg'),
    'grace_hopper': ('matplotlib', 'mpl-data/sample_data/grace_hopper.jpg'),
    'camera': ('skimage.data', 'camera.png'),
    'coins': ('skimage.data', 'coins.png'),
    'brick': ('skimage.data', 'brick.png'),
    'grass': ('skimage.data', 'grass.png'),
    'gravel': ('skimage.data', 'gravel.png'),
    'china': ('sklearn.datasets', 'images/china.jpg'),
    'flower': ('sklearn.datasets', 'images/flower.jpg'),
}
DEFAULT_DEMO_SOURCES: Tuple[str, ...] = (
    'astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry',
    'hubble_deep_field', 'retina', 'grace_hopper')


def demo_image_path(name: str) -> str:
    """Path of the file behind the demo source ``name``."""
    if name not in DEMO_SOURCES:
        raise KeyError(f'unknown demo source {name!r}; choose from '
                       f'{sorted(DEMO_SOURCES)}')
    package, relpath = DEMO_SOURCES[name]
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f'demo source {name!r} is read from the package {package!r}, '
            f'which is not installed; install it or leave {name!r} out of '
            'sources') from err
    path = root.joinpath(*relpath.split('/'))
    if not path.is_file():
        raise FileNotFoundError(f'demo source {name!r}: {path} is missing '
                                f'from the installed {package!r}')
    return str(path)


@DATASETS.register_module()
class DemoImageDataset(Dataset):
    """Crops of a few bundled photos; label = index of the photo in
    ``sources``.

    Args:
        mode: ``'train'``: item ``i`` is a random resized crop (area fraction
            in ``scale``, aspect 3/4..4/3) of photo ``i % num_classes``,
            resized to ``image_size`` and randomly flipped (seeded per sample
            by ``SeededSampler``, else torch's global RNG).
            ``'val'``: fixed tiles: for each photo and each ``g`` in
            ``val_grids``, the ADM centre crop at ``g * image_size`` cut into
            ``g x g`` tiles (``g = 1`` is the plain ADM centre crop).
        image_size: output side, items are ``[3, image_size, image_size]``.
        samples_per_epoch: length in train mode.
        sources: names from :data:`DEMO_SOURCES`, default
            :data:`DEFAULT_DEMO_SOURCES` (8 classes).
        scale: train crop area range, as a fraction of the photo.
        val_grids: tile grids of val mode.
    """

    def __init__(self,
                 mode: str = 'train',
                 image_size: int = 64,
                 samples_per_epoch: int = 512,
                 sources: Optional[Sequence[str]] = None,
                 scale: Sequence[float] = (0.25, 1.0),
                 val_grids: Sequence[int] = (1, 2)) -> None:
        super().__init__()
        if mode not in ('train', 'val'):
            raise ValueError(f"mode must be 'train' or 'val', got {mode!r}")
        check_positive_int(image_size, 'image_size')
        check_positive_int(samples_per_epoch, 'samples_per_epoch')
        sources = tuple(DEFAULT_DEMO_SOURCES if sources is None else sources)
        if not sources or len(set(sources)) != len(sources):
            raise ValueError('sources must be non-empty names without '
                             f'repeats, got {sources!r}')
        if not val_grids:
            raise ValueError('val_grids must not be empty')
        for g in val_grids:
            check_positive_int(g, 'val_grids entries')
        self.mode = mode
        self.image_size = image_size
        self.samples_per_epoch = samples_per_epoch
        self.classes: Tuple[str, ...] = sources
        self.paths: List[str] = [demo_image_path(n) for n in sources]
        self.val_grids = tuple(val_grids)
        if mode == 'train':
            self.crop = RandomResizedCropFlip(image_size, scale=scale)
            # Halving first keeps every crop a downscale and makes it cheap.
            self.images: List[Image.Image] = [
                box_downsample(load_rgb_image(p), 2 * image_size)
                for p in self.paths]
        else:
            self.tiles = self._make_tiles()

    def _make_tiles(self) -> List[Tuple[torch.Tensor, int]]:
        """``[(Tensor[3, S, S], label), ...]`` for every photo and grid."""
        tiles, s = [], self.image_size
        for label, path in enumerate(self.paths):
            img = load_rgb_image(path)
            for g in self.val_grids:
                square = to_tensor01(adm_center_crop(img, g * s))
                for r in range(g):
                    for c in range(g):
                        tile = square[:, r * s:(r + 1) * s, c * s:(c + 1) * s]
                        tiles.append((tile.clone(), label))
        return tiles

    @property
    def metainfo(self) -> Dict[str, tuple]:
        return dict(classes=self.classes)

    def __len__(self) -> int:
        return self.samples_per_epoch if self.mode == 'train' else len(
            self.tiles)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f'index {index} out of range for {len(self)}')
        generator = sample_generator(index)
        index %= len(self)
        if self.mode == 'train':
            label = index % len(self.classes)
            inputs = self.crop(self.images[label], generator)
        else:
            inputs, label = self.tiles[index]
            inputs = inputs.clone()
        return dict(inputs=inputs,
                    data_samples=dict(gt_label=label,
                                      img_path=self.paths[label]))

    def __repr__(self) -> str:
        return (f'DemoImageDataset(mode={self.mode!r}, image_size='
                f'{self.image_size}, len={len(self)}, '
                f'classes={list(self.classes)})')
