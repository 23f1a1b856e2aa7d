import logging
import os

import numpy as np
import pytest
import torch
from mmengine.dataset import default_collate
from mmengine.registry import DefaultScope
from PIL import Image
from torch.utils.data import DataLoader

from decq_plugin.datasets import image_folder
from decq_plugin.datasets.image_folder import (CorruptImageError,
                                               ImageFolderDataset,
                                               ImageNetDataset)
from decq_plugin.datasets.transforms import AdmCenterCrop, ToTensor01
from decq_plugin.registry import DATASETS


def _save(path, arr, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)


def _rgb(value, h=20, w=24):
    return np.full((h, w, 3), value, np.uint8)


@pytest.fixture
def folder(tmp_path):
    """cat/a.png, cat/sub/b.png, dog/c.jpg (gray), dog/d.png (RGBA),
    plus a text file and a hidden file that must be ignored."""
    root = tmp_path / 'imgs'
    _save(str(root / 'cat' / 'a.png'), _rgb((200, 10, 10)))
    _save(str(root / 'cat' / 'sub' / 'b.png'), _rgb((10, 200, 10)))
    _save(str(root / 'dog' / 'c.jpg'), np.full((20, 24), 128, np.uint8))
    rgba = np.zeros((20, 24, 4), np.uint8)
    rgba[...] = (10, 10, 200, 40)
    _save(str(root / 'dog' / 'd.png'), rgba)
    (root / 'dog' / 'notes.txt').write_text('not an image')
    _save(str(root / 'dog' / '.hidden.png'), _rgb(0))
    return root


def test_labelled_nested_classes_and_rgb(folder):
    ds = ImageFolderDataset(str(folder), transform=ToTensor01(),
                            labelled=True)
    assert ds.classes == ['cat', 'dog']
    assert ds.metainfo == dict(classes=('cat', 'dog'))
    names = [os.path.relpath(p, folder) for p, _ in ds.samples]
    assert names == ['cat/a.png', 'cat/sub/b.png', 'dog/c.jpg', 'dog/d.png']
    assert [label for _, label in ds.samples] == [0, 0, 1, 1]
    gray, rgba = ds[2], ds[3]
    assert gray['inputs'].shape == (3, 20, 24)
    assert torch.allclose(gray['inputs'], torch.full((3, 20, 24), 128 / 255),
                          atol=2 / 255)  # jpeg
    assert torch.allclose(rgba['inputs'][:, 0, 0],
                          torch.tensor([10, 10, 200]) / 255)
    assert rgba['data_samples'] == dict(
        gt_label=1, img_path=str(folder / 'dog' / 'd.png'))
    assert len(list(ds)) == 4  # IndexError ends plain iteration


def test_unlabelled_recursive_and_extensions(folder):
    ds = ImageFolderDataset(str(folder), transform=ToTensor01())
    assert len(ds) == 4 and {label for _, label in ds.samples} == {0}
    assert ds.classes == []
    pngs = ImageFolderDataset(str(folder), extensions=('PNG',))
    assert len(pngs) == 3
    flat = ImageFolderDataset(str(folder / 'cat'), recursive=False)
    assert [os.path.basename(p) for p, _ in flat.samples] == ['a.png']


def test_default_transform_is_adm_crop_and_subsets(folder):
    ds = ImageFolderDataset(str(folder), labelled=True, max_samples=3)
    assert isinstance(ds.transform, AdmCenterCrop)
    assert len(ds) == 3 and ds[0]['inputs'].shape == (3, 256, 256)
    sub = ImageFolderDataset(str(folder), labelled=True, indices=[3, 1],
                             max_samples=1)
    assert [os.path.basename(p) for p, _ in sub.samples] == ['d.png']
    with pytest.raises(IndexError, match='indices'):
        ImageFolderDataset(str(folder), indices=[4])
    with pytest.raises(ValueError, match='max_samples'):
        ImageFolderDataset(str(folder), max_samples=0)


def test_missing_and_empty_root_errors(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match='expected layout'):
        ImageFolderDataset(str(tmp_path / 'nope'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no image files'):
        ImageFolderDataset(str(tmp_path / 'empty'))
    with pytest.raises(ValueError, match='directly in'):
        _save(str(folder / 'loose.png'), _rgb(1))
        ImageFolderDataset(str(folder), labelled=True)


@pytest.fixture
def with_corrupt(tmp_path):
    root = tmp_path / 'c'
    _save(str(root / 'a.png'), _rgb(50))
    (root / 'b.png').write_bytes(b'\x89PNG\r\n\x1a\n garbage')
    good = root / 'c.png'
    _save(str(good), _rgb(150))
    data = good.read_bytes()
    (root / 'd_truncated.png').write_bytes(data[:len(data) // 2])
    return root


def test_corrupt_image_error_names_the_file(with_corrupt):
    ds = ImageFolderDataset(str(with_corrupt), transform=ToTensor01())
    assert ds[0]['inputs'].shape == (3, 20, 24)
    for i, name in ((1, 'b.png'), (3, 'd_truncated.png')):
        with pytest.raises(CorruptImageError) as info:
            ds[i]
        assert str(with_corrupt / name) in str(info.value)
        assert info.value.path == str(with_corrupt / name)


def test_skip_corrupt_warns_and_uses_next(with_corrupt, monkeypatch):
    logged = []
    monkeypatch.setattr(image_folder, 'print_log',
                        lambda msg, logger, level: logged.append((msg, level)))
    ds = ImageFolderDataset(str(with_corrupt), transform=ToTensor01(),
                            skip_corrupt=True)
    item = ds[1]
    assert item['data_samples']['img_path'] == str(with_corrupt / 'c.png')
    assert torch.allclose(item['inputs'], torch.full((3, 20, 24), 150 / 255))
    assert len(logged) == 1 and logged[0][1] == logging.WARNING
    assert str(with_corrupt / 'b.png') in logged[0][0]
    # The last file is corrupt: wrap around to the first readable one.
    assert ds[3]['data_samples']['img_path'] == str(with_corrupt / 'a.png')


@pytest.fixture
def imagenet(tmp_path):
    root = tmp_path / 'imagenet'
    wnids = ['n01443537', 'n01440764', 'n02102040']  # deliberately unsorted
    for split, per_class in (('train', 2), ('val', 1)):
        for k, wnid in enumerate(wnids):
            for j in range(per_class):
                _save(str(root / split / wnid / f'{wnid}_{j}.JPEG'),
                      _rgb(40 * k + j, 40, 48))
    return root


def test_imagenet_layout_labels(imagenet):
    train = ImageNetDataset(str(imagenet), split='train',
                            transform=dict(type='RAETrainCrop', resize=40,
                                           crop=32))
    assert train.classes == ['n01440764', 'n01443537', 'n02102040']
    assert len(train) == 6
    labels = {os.path.basename(p).split('_')[0]: lab
              for p, lab in train.samples}
    assert labels == {'n01440764': 0, 'n01443537': 1, 'n02102040': 2}
    assert train[0]['inputs'].shape == (3, 32, 32)
    val = ImageNetDataset(str(imagenet), split='val')
    assert len(val) == 3 and isinstance(val.transform, AdmCenterCrop)
    assert [lab for _, lab in val.samples] == [0, 1, 2]
    with pytest.raises(ValueError, match='split'):
        ImageNetDataset(str(imagenet), split='test')


def test_imagenet_flat_val_and_missing_errors(tmp_path):
    _save(str(tmp_path / 'in' / 'val' / 'ILSVRC2012_val_00000001.JPEG'),
          _rgb(1))
    with pytest.raises(ValueError, match='val/<wnid>'):
        ImageNetDataset(str(tmp_path / 'in'), split='val')
    with pytest.raises(FileNotFoundError, match='train/<wnid>'):
        ImageNetDataset(str(tmp_path / 'in'), split='train')


def test_built_from_config_and_default_collate(imagenet):
    with DefaultScope.overwrite_default_scope('decq_plugin'):
        ds = DATASETS.build(dict(type='ImageNetDataset',
                                 data_root=str(imagenet), split='val',
                                 transform=dict(type='AdmCenterCrop',
                                                size=32)))
    assert isinstance(ds, ImageNetDataset)
    loader = DataLoader(ds, batch_size=3, collate_fn=default_collate)
    batch = next(iter(loader))
    assert batch['inputs'].shape == (3, 3, 32, 32)
    assert batch['inputs'].dtype == torch.float32
    assert torch.equal(batch['data_samples']['gt_label'],
                       torch.tensor([0, 1, 2]))
    assert isinstance(batch['data_samples']['img_path'], list)
    assert batch['data_samples']['img_path'][0].endswith('n01440764_0.JPEG')
