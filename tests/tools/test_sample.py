"""tools/sample.py: class-balanced, per-sample-seeded samples of a tiny
stage-2 model; the ADM .npz; resuming; batch-size independence; weights
and config handling; metrics on the .npz."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from decq_plugin.engine.checkpoint import StateDictMismatchError
from decq_plugin.registry import MODELS
from decq_plugin.utils.launch import load_config

from tiny_models import TINY_DIT as DIT
from tiny_models import TINY_TOKENIZER as TOKENIZER
from tiny_models import load_tool, randomize, tiny_ldm

tool = load_tool('sample', 'decq_tool_sample')

NUM_CLASSES = 3
PER_CLASS = 2
N = NUM_CLASSES * PER_CLASS
IMAGE = 32
MODEL = tiny_ldm(NUM_CLASSES, num_points=4)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('sample')
    config = root / 'tiny_ldm.py'
    config.write_text(f'model = {MODEL!r}\n')
    init_default_scope('decq_plugin')
    torch.manual_seed(0)
    model = MODELS.build(load_config(str(config)).model).eval()
    randomize(model.denoiser, 1)
    checkpoint = root / 'ldm.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    return dict(config=str(config), checkpoint=str(checkpoint), model=model,
                root=root)


def run(setup, out_dir, *flags, **kw):
    argv = [kw.get('config', setup['config']),
            kw.get('checkpoint', setup['checkpoint']), '--out-dir',
            str(out_dir), '--num-per-class', str(PER_CLASS), *flags]
    return tool.main(argv)


def load_npz(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def pngs(out_dir):
    return np.stack([np.asarray(Image.open(
        Path(out_dir) / 'samples' / f'{i:06d}.png')) for i in range(N)])


def assert_same_images(a, b):
    """Equal up to float rounding across batch compositions: at most one
    8-bit level, on very few pixels."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_npz_round_trip_class_balance_and_seeds(setup, tmp_path):
    result = run(setup, tmp_path, '--batch-size', '4', '--seed', '5')
    data = load_npz(tmp_path / 'samples.npz')
    assert set(data) == {'arr_0', 'arr_1'}
    assert data['arr_0'].dtype == np.uint8
    assert data['arr_0'].shape == (N, IMAGE, IMAGE, 3) == result['shape']
    # Class-balanced in RAE's seeded random order: randperm of the sorted
    # pool with a generator seeded with --seed.
    pool = torch.arange(NUM_CLASSES).repeat_interleave(PER_CLASS)
    order = pool[torch.randperm(N, generator=torch.Generator().manual_seed(
        5))].tolist()
    assert data['arr_1'].tolist() == order != sorted(order)
    assert np.array_equal(data['arr_0'], pngs(tmp_path))
    assert len({a.tobytes() for a in data['arr_0']}) == N  # own noise each
    # sample i is the model's sample of its class from noise seed 5 + i,
    # truncated to 8 bits as ADM / RAE: (x.clamp(0, 1) * 255).to(uint8)
    model = setup['model']
    for i in (0, 3, 5):
        noise = model.make_noise(1, seeds=[5 + i])
        x = model.sample(torch.tensor([order[i]]), noise)
        image = (x.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1)
        assert_same_images(image[0].numpy(), data['arr_0'][i])
    settings = json.loads((tmp_path / 'sampling.json').read_text())
    assert settings['seed'] == 5 and settings['classes'] == [0, 1, 2]


def test_resume_regenerates_the_same_images(setup, tmp_path):
    run(setup, tmp_path, '--batch-size', '4')
    before = load_npz(tmp_path / 'samples.npz')['arr_0']
    folder = tmp_path / 'samples'
    kept = os.stat(folder / '000002.png')
    for i in (0, 3, 4):
        os.remove(folder / f'{i:06d}.png')
    result = run(setup, tmp_path, '--batch-size', '4')
    assert result['made_by_rank0'] == 3
    assert os.stat(folder / '000002.png').st_ino == kept.st_ino
    assert_same_images(load_npz(tmp_path / 'samples.npz')['arr_0'], before)
    assert not list(folder.glob('*.tmp'))


def test_batch_size_does_not_change_samples(setup, tmp_path):
    run(setup, tmp_path / 'b1', '--batch-size', '1', '--no-npz')
    run(setup, tmp_path / 'b3', '--batch-size', '3', '--no-npz')
    assert not (tmp_path / 'b1' / 'samples.npz').exists()
    assert_same_images(pngs(tmp_path / 'b1'), pngs(tmp_path / 'b3'))


def test_sorted_classes_and_rounding(setup, tmp_path):
    run(setup, tmp_path / 'round', '--sorted-classes', '--rounding', 'round')
    run(setup, tmp_path / 'trunc', '--sorted-classes')
    rounded = load_npz(tmp_path / 'round' / 'samples.npz')
    truncated = load_npz(tmp_path / 'trunc' / 'samples.npz')
    assert rounded['arr_1'].tolist() == [0, 0, 1, 1, 2, 2]
    diff = rounded['arr_0'].astype(int) - truncated['arr_0'].astype(int)
    assert set(np.unique(diff)) <= {0, 1} and diff.mean() > 0.2
    settings = json.loads((tmp_path / 'round' / 'sampling.json').read_text())
    assert settings['class_order'] == 'sorted'
    assert settings['rounding'] == 'round'


def test_class_list_and_no_png(setup, tmp_path):
    run(setup, tmp_path, '--classes', '2', '0', '--no-png', '--npz',
        str(tmp_path / 'out.npz'), '--sorted-classes')
    data = load_npz(tmp_path / 'out.npz')
    assert data['arr_1'].tolist() == [2, 2, 0, 0]
    assert data['arr_0'].shape == (4, IMAGE, IMAGE, 3)
    assert not list((tmp_path / 'samples').glob('*.png'))
    with pytest.raises(ValueError, match='outside'):
        run(setup, tmp_path / 'bad', '--classes', '3')


def test_rerun_with_other_settings_is_refused(setup, tmp_path):
    run(setup, tmp_path, '--no-npz')
    with pytest.raises(ValueError, match='seed'):
        run(setup, tmp_path, '--no-npz', '--seed', '1')


def test_metrics_against_the_samples_themselves(setup, tmp_path, capsys):
    run(setup, tmp_path / 'a', '--num-classes', '3')
    reference = str(tmp_path / 'a' / 'samples.npz')
    extractor = ('--feature-extractor', 'RandomConvFeatureExtractor',
                 '--metric-names', 'fid')
    same = run(setup, tmp_path / 'a', '--metrics', '--reference', reference,
               *extractor)['metrics']['FID']
    other = run(setup, tmp_path / 'b', '--metrics', '--reference',
                reference, '--seed', '100', *extractor)['metrics']['FID']
    assert abs(same) < 1e-3 < other
    assert 'FID=' in capsys.readouterr().out


def test_sampling_options_edit_the_config():
    cfg = Config(dict(model=dict(MODEL, guidance=None)))
    tool.apply_sampling_options(cfg, 9, 1.5, (0.1, 0.7))
    assert cfg.model.sampler.num_points == 10
    assert cfg.model.guidance == dict(type='ClassifierFreeGuidance',
                                      scale=1.5, interval=(0.1, 0.7))
    auto = Config(dict(model=dict(MODEL, guidance=dict(
        type='AutoGuidance', scale=1.42, guide=DIT))))
    tool.apply_sampling_options(auto, None, 2.0, None)
    assert auto.model.guidance.type == 'AutoGuidance'
    assert auto.model.guidance.scale == 2.0
    with pytest.raises(ValueError, match='guidance'):
        tool.apply_sampling_options(Config(dict(model=dict(MODEL))), None,
                                    None, (0.0, 0.5))


def test_checkpoint_parts_replace_config_files(setup, tmp_path):
    state = setup['model'].state_dict()
    model_cfg = Config(dict(model=dict(
        MODEL, tokenizer_ckpt='stage1.pth',
        tokenizer=dict(TOKENIZER, latent_stats='stats.pt',
                       encoder=dict(TOKENIZER['encoder'],
                                    pretrained=True))))).model
    assert tool.use_checkpoint_parts(model_cfg, state) == []
    assert model_cfg.tokenizer_ckpt is None
    assert model_cfg.tokenizer.latent_stats is None
    assert model_cfg.tokenizer.encoder.pretrained is False
    # without tokenizer weights the config's stage-1 file is needed
    denoiser_only = {k: v for k, v in state.items()
                     if k.startswith('denoiser.')}
    model_cfg = Config(dict(model=dict(MODEL,
                                       tokenizer_ckpt='stage1.pth'))).model
    assert tool.use_checkpoint_parts(model_cfg, denoiser_only) == [
        'tokenizer']
    # ... and a checkpoint missing a part nothing else provides is refused
    path = tmp_path / 'denoiser_only.pth'
    torch.save({'state_dict': denoiser_only}, path)
    with pytest.raises(StateDictMismatchError, match='tokenizer'):
        run(setup, tmp_path / 'out', '--no-npz', checkpoint=str(path))


def test_raw_weights_come_from_ema_state_dict(setup, tmp_path):
    state = setup['model'].state_dict()
    key = next(k for k in state if k.startswith('denoiser.'))
    raw = torch.full_like(state[key], 3.0)
    path = tmp_path / 'ema.pth'
    torch.save({'state_dict': state,
                'ema_state_dict': {f'module.{key}': raw,
                                   'steps': torch.tensor(7)}}, path)
    assert torch.equal(tool.read_checkpoint_state(str(path))[key],
                       state[key])
    loaded = tool.read_checkpoint_state(str(path), raw=True)
    assert torch.equal(loaded[key], raw) and 'steps' not in loaded


def test_npz_is_packed_in_index_order_and_copies_cleanly(setup, tmp_path):
    run(setup, tmp_path, '--no-npz')
    shutil.copy(tmp_path / 'samples' / '000005.png',
                tmp_path / 'samples' / '000000.png')
    tool.pack_npz(str(tmp_path / 'samples'), [0] * N,
                  str(tmp_path / 's.npz'))
    arr = load_npz(tmp_path / 's.npz')['arr_0']
    assert np.array_equal(arr[0], arr[5])
    assert not np.array_equal(arr[0], arr[1])
    os.remove(tmp_path / 'samples' / '000004.png')
    with pytest.raises(FileNotFoundError, match='missing'):
        tool.pack_npz(str(tmp_path / 'samples'), [0] * N,
                      str(tmp_path / 's.npz'))
