import importlib.util
import socket

import numpy as np
import pytest
import torch
from mmengine.dataset import default_collate
from torch.utils.data import DataLoader

from decq_plugin.datasets.demo_images import (DEFAULT_DEMO_SOURCES,
                                              DemoImageDataset,
                                              demo_image_path)
from decq_plugin.datasets.image_folder import load_rgb_image
from decq_plugin.datasets.transforms import adm_center_crop, to_tensor01


@pytest.fixture
def offline(monkeypatch):
    """No network: every socket connection is refused."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')

    def refuse(*args, **kwargs):
        raise OSError('network access attempted in an offline test')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket.socket, 'connect_ex', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)


def test_train_mode_offline_shapes_labels_and_seed(offline):
    ds = DemoImageDataset(mode='train', image_size=32, samples_per_epoch=20)
    assert len(ds) == 20
    assert ds.classes == DEFAULT_DEMO_SOURCES and len(ds.classes) == 8
    item = ds[9]
    assert item['inputs'].shape == (3, 32, 32)
    assert item['inputs'].dtype == torch.float32
    assert 0.0 <= item['inputs'].min() and item['inputs'].max() <= 1.0
    assert item['data_samples']['gt_label'] == 9 % 8
    assert item['data_samples']['img_path'].endswith('coffee.png')
    torch.manual_seed(0)
    a = ds[3]['inputs']
    torch.manual_seed(0)
    assert torch.equal(a, ds[3]['inputs'])
    assert not torch.equal(a, ds[3]['inputs'])  # a new random crop


def test_val_mode_is_deterministic_adm_tiles(offline):
    ds = DemoImageDataset(mode='val', image_size=16, val_grids=(1, 2),
                          sources=('chelsea', 'rocket'))
    assert len(ds) == 2 * (1 + 4)
    labels = [ds[i]['data_samples']['gt_label'] for i in range(len(ds))]
    assert labels == [0] * 5 + [1] * 5
    chelsea = load_rgb_image(demo_image_path('chelsea'))
    assert torch.equal(ds[0]['inputs'],
                       to_tensor01(adm_center_crop(chelsea, 16)))
    big = to_tensor01(adm_center_crop(chelsea, 32))
    assert torch.equal(ds[2]['inputs'], big[:, :16, 16:])  # row 0, col 1
    again = DemoImageDataset(mode='val', image_size=16,
                             sources=('chelsea', 'rocket'))
    assert all(torch.equal(ds[i]['inputs'], again[i]['inputs'])
               for i in range(len(ds)))


def test_bundled_photos_are_the_skimage_images(offline):
    skimage_data = pytest.importorskip('skimage.data')
    path = demo_image_path('astronaut')
    np.testing.assert_array_equal(np.asarray(load_rgb_image(path)),
                                  skimage_data.astronaut())
    # Grayscale sources are replicated to RGB.
    gray = load_rgb_image(demo_image_path('camera'))
    assert gray.mode == 'RGB' and gray.size == (512, 512)
    # Every default source is a distinct, readable photo.
    sums = {int(np.asarray(load_rgb_image(demo_image_path(n))).sum())
            for n in DEFAULT_DEMO_SOURCES}
    assert len(sums) == len(DEFAULT_DEMO_SOURCES)


def test_default_collate_batch(offline):
    ds = DemoImageDataset(image_size=16, samples_per_epoch=8,
                          sources=('coffee', 'grace_hopper'))
    batch = next(iter(DataLoader(ds, batch_size=4,
                                 collate_fn=default_collate)))
    assert batch['inputs'].shape == (4, 3, 16, 16)
    assert batch['data_samples']['gt_label'].tolist() == [0, 1, 0, 1]


def test_argument_errors():
    with pytest.raises(ValueError, match='mode'):
        DemoImageDataset(mode='test')
    with pytest.raises(ValueError, match='image_size'):
        DemoImageDataset(image_size=0)
    with pytest.raises(KeyError, match='unknown demo source'):
        DemoImageDataset(sources=('lena',))
    with pytest.raises(ValueError, match='sources'):
        DemoImageDataset(sources=('coffee', 'coffee'))


@pytest.mark.skipif(importlib.util.find_spec('sklearn') is not None,
                    reason='scikit-learn is installed here')
def test_optional_source_without_its_package_says_so():
    with pytest.raises(ModuleNotFoundError, match="'china'.*not installed"):
        DemoImageDataset(sources=('coffee', 'china'))


def test_demo_loaders_emit_no_user_warning(offline):
    """The demo recipe's train and val loaders, built as the runner builds
    them (``SeededSampler``), give batches without any ``UserWarning``."""
    import warnings

    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    from decq_plugin.utils.launch import load_config
    from tiny_models import DEMO_DECQ
    cfg = load_config(DEMO_DECQ)
    with warnings.catch_warnings(record=True) as caught, \
            DefaultScope.overwrite_default_scope(cfg.default_scope):
        warnings.simplefilter('always')
        for split in ('train_dataloader', 'val_dataloader'):
            loader = Runner.build_dataloader(dict(cfg[split]), seed=0)
            assert next(iter(loader))['inputs'].shape[1:] == (3, 64, 64)
    assert [str(w.message) for w in caught
            if issubclass(w.category, UserWarning)] == []
