"""decq_plugin.apis.sample_to_npz / load_sampling_model called from Python
(no command line): the ADM .npz, class balance, resuming without
recomputing, and a model loaded from a config and a training checkpoint."""
import json
from collections import Counter

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from PIL import Image

from decq_plugin.apis import load_sampling_model, sample_to_npz
from decq_plugin.registry import MODELS

from tiny_models import randomize, tiny_ldm

NUM_CLASSES = 3
IMAGE = 32
MODEL = tiny_ldm(NUM_CLASSES)


@pytest.fixture(scope='module')
def model():
    init_default_scope('decq_plugin')
    torch.manual_seed(0)
    model = MODELS.build(MODEL).eval()
    randomize(model.denoiser, 1)
    return model


class CountingSamples:
    """Counts the images ``model.sample`` makes while active."""

    def __init__(self, model, monkeypatch):
        self.count = 0
        original = model.sample

        def sample(labels, *args, **kwargs):
            self.count += len(labels)
            return original(labels, *args, **kwargs)

        monkeypatch.setattr(model, 'sample', sample)


def load(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def test_npz_layout_and_class_balance(model, tmp_path):
    result = sample_to_npz(model, str(tmp_path), num_per_class=3,
                           batch_size=4, seed=2, progress=False,
                           settings=dict(note='api'))
    assert result['npz'] == str(tmp_path / 'samples.npz')
    data = load(result['npz'])
    assert set(data) == {'arr_0', 'arr_1'}
    images, labels = data['arr_0'], data['arr_1']
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    assert images.shape == (9, IMAGE, IMAGE, 3) == result['shape']
    assert Counter(labels.tolist()) == {0: 3, 1: 3, 2: 3}
    assert labels.tolist() != sorted(labels.tolist())  # seeded random order
    assert result['num_samples'] == result['made_by_rank0'] == 9
    assert result['precision'] == 'fp32' and result['classes'] == [0, 1, 2]
    # The PNGs are kept and equal the npz; the settings are recorded.
    png = np.asarray(Image.open(tmp_path / 'samples' / '000004.png'))
    assert np.array_equal(png, images[4])
    settings = json.loads((tmp_path / 'sampling.json').read_text())
    assert settings['note'] == 'api' and settings['seed'] == 2
    assert settings['class_order'] == 'random'


def test_resume_makes_only_the_missing_samples(model, tmp_path,
                                               monkeypatch):
    kwargs = dict(classes=[2, 0], num_per_class=2, batch_size=3,
                  progress=False, shuffle_classes=False)
    first = sample_to_npz(model, str(tmp_path), **kwargs)
    before = load(first['npz'])
    assert before['arr_1'].tolist() == [2, 2, 0, 0]
    (tmp_path / 'samples' / '000001.png').unlink()
    counter = CountingSamples(model, monkeypatch)
    again = sample_to_npz(model, str(tmp_path), **kwargs)
    assert counter.count == 1 and again['made_by_rank0'] == 1
    after = load(again['npz'])
    diff = np.abs(after['arr_0'].astype(int) - before['arr_0'].astype(int))
    assert diff.max() <= 1  # the remade sample: same seed, same image
    # Complete: nothing is sampled, the npz is packed again.
    counter.count = 0
    assert sample_to_npz(model, str(tmp_path), **kwargs)[
        'made_by_rank0'] == 0
    assert counter.count == 0
    # Other settings in the same folder are refused.
    with pytest.raises(ValueError, match='seed'):
        sample_to_npz(model, str(tmp_path), **dict(kwargs, seed=1))


def test_npz_path_png_removal_and_png_only(model, tmp_path):
    npz = tmp_path / 'elsewhere' / 'out.npz'
    result = sample_to_npz(model, str(tmp_path / 'a'), num_classes=2,
                           num_per_class=1, npz=str(npz), keep_png=False,
                           progress=False)
    assert result['npz'] == str(npz) and load(npz)['arr_0'].shape[0] == 2
    assert not list((tmp_path / 'a' / 'samples').glob('*.png'))
    result = sample_to_npz(model, str(tmp_path / 'b'), classes=[1],
                           num_per_class=2, write_npz=False, progress=False)
    assert 'npz' not in result
    assert len(list((tmp_path / 'b' / 'samples').glob('*.png'))) == 2
    assert not (tmp_path / 'b' / 'samples.npz').exists()


def test_bad_arguments_are_named(model, tmp_path):
    with pytest.raises(ValueError, match='outside'):
        sample_to_npz(model, str(tmp_path), classes=[NUM_CLASSES])
    with pytest.raises(ValueError, match='keep_png'):
        sample_to_npz(model, str(tmp_path), write_npz=False, keep_png=False)
    with pytest.raises(ValueError, match='num_per_class'):
        sample_to_npz(model, str(tmp_path), num_per_class=0)


def test_load_sampling_model_from_config_and_checkpoint(model, tmp_path):
    config = tmp_path / 'tiny_ldm.py'
    config.write_text(f'model = {MODEL!r}\n')
    checkpoint = tmp_path / 'ldm.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    loaded = load_sampling_model(str(config), str(checkpoint), num_steps=5,
                                 guidance_scale=1.5)
    assert not loaded.training
    assert loaded.sampler.num_steps == 5
    assert type(loaded.guidance).__name__ == 'ClassifierFreeGuidance'
    own = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, own[key]), key
