"""tools/extract_latents.py: latents of a tiny DecQ tokenizer over a folder
of labelled images, read back through CachedLatentDataset; resuming and
extending; merged multi-rank output."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from PIL import Image
from safetensors.torch import load_file

from decq_plugin.apis import build_tokenizer_from_config
from decq_plugin.datasets.latent_dataset import CachedLatentDataset
from decq_plugin.datasets.transforms import AdmCenterCrop
from decq_plugin.registry import MODELS
from decq_plugin.utils.launch import load_config

from tiny_models import TINY_DIT as DIT
from tiny_models import TINY_TOKENIZER as TOKENIZER
from tiny_models import load_tool

tool = load_tool('extract_latents', 'decq_tool_extract')

IMAGE = 32
CLASSES = ('ant', 'bee', 'cat')
# (class, width, height) of the 7 images; non-square, so the crop matters.
FILES = [(0, 48, 40), (0, 40, 56), (1, 64, 36), (1, 36, 36), (1, 50, 70),
         (2, 44, 60), (2, 72, 40)]


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Image folder, stage-2 config (random training crop), checkpoint,
    statistics file and the tokenizer that wrote the checkpoint."""
    root = tmp_path_factory.mktemp('extract')
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for k, (label, w, h) in enumerate(FILES):
        folder = root / 'images' / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        ramp = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
        noise = rng.integers(0, 120, (h, w, 3))
        array = ((ramp + noise) % 256).astype(np.uint8)
        path = folder / f'img_{k}.png'
        Image.fromarray(array).save(path)
        paths.append(str(path))
        labels.append(label)
    dataset = dict(type='ImageFolderDataset', data_root=str(root / 'images'),
                   labelled=True,
                   transform=dict(type='RAETrainCrop', resize=40, crop=32))
    model = dict(type='LatentDiffusionModel', tokenizer=TOKENIZER,
                 denoiser=DIT, num_classes=3)
    loader = dict(batch_size=3, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=True),
                  collate_fn=dict(type='default_collate'), dataset=dataset)
    config = root / 'tiny_ldm.py'
    config.write_text(f'model = {model!r}\ntrain_dataloader = {loader!r}\n')
    init_default_scope('decq_plugin')
    torch.manual_seed(0)
    model = MODELS.build(load_config(str(config)).model).eval()
    checkpoint = root / 'ldm.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    g = torch.Generator().manual_seed(1)
    stats = {}
    for key, shape in model.tokenizer.latent_shapes.items():
        stats[f'{key}_mean'] = torch.randn(shape, generator=g)
        stats[f'{key}_var'] = torch.rand(shape, generator=g) + 0.5
    stats_file = root / 'stats.pt'
    torch.save(stats, stats_file)
    return dict(config=str(config), checkpoint=str(checkpoint),
                stats=str(stats_file), stats_dict=stats,
                tokenizer=model.tokenizer, paths=paths, labels=labels)


def expected(setup, flip=False, normalise=False):
    """Latents of the ADM centre crops, encoded one image at a time."""
    crop = AdmCenterCrop(IMAGE)
    out = []
    with torch.no_grad():
        for path in setup['paths']:
            image = crop(Image.open(path))[None]
            if flip:
                image = image.flip(-1)
            z = setup['tokenizer'].encode(image, normalize=False)
            if normalise:
                s = setup['stats_dict']
                z = {k: (v - s[f'{k}_mean']) / (s[f'{k}_var'] + 1e-5).sqrt()
                     for k, v in z.items()}
            out.append({k: v[0] for k, v in z.items()})
    return out


def run(setup, out_dir, *flags):
    return tool.main([setup['config'], setup['checkpoint'], '--out-dir',
                      str(out_dir), *flags])


def shard_tensors(out_dir):
    meta = json.loads((Path(out_dir) / 'meta.json').read_text())
    parts = [load_file(str(Path(out_dir) / s['file'])) for s in meta['shards']]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def test_round_trip_normalised_with_flips(setup, tmp_path):
    meta = run(setup, tmp_path / 'lat', '--stats', setup['stats'],
               '--dtype', 'float32', '--shard-size', '3')
    assert meta['normalised'] and meta['has_flip'] and meta['complete']
    assert meta['count'] == len(FILES)
    assert [s['count'] for s in meta['shards']] == [3, 3, 1]
    ds = CachedLatentDataset(str(tmp_path / 'lat'), use_flip=False)
    assert ds.latent_shapes == {'patch': (32, 2, 2), 'query': (2, 32)}
    want = expected(setup, normalise=True)
    for i in range(len(FILES)):
        item = ds[i]
        assert item['data_samples']['gt_label'] == setup['labels'][i]
        for key in ('patch', 'query'):
            torch.testing.assert_close(item['inputs'][key], want[i][key],
                                       atol=1e-4, rtol=1e-4)
    flips = shard_tensors(tmp_path / 'lat')
    want_flip = expected(setup, flip=True, normalise=True)
    for key in ('patch', 'query'):
        torch.testing.assert_close(
            flips[f'{key}_flip'], torch.stack([w[key] for w in want_flip]),
            atol=1e-4, rtol=1e-4)
        # flipping changes the latents, so the check above has teeth
        assert not torch.allclose(flips[f'{key}_flip'], flips[key],
                                  atol=1e-2)


def test_raw_latents_without_stats_and_flips(setup, tmp_path):
    meta = run(setup, tmp_path / 'lat', '--no-flip', '--batch-size', '4')
    assert not meta['normalised'] and not meta['has_flip']
    assert meta['dtype'] == 'float16' and meta['count'] == len(FILES)
    stored = shard_tensors(tmp_path / 'lat')
    assert stored['patch'].dtype == torch.float16
    assert set(stored) == {'patch', 'query', 'label'}
    want = expected(setup)
    torch.testing.assert_close(
        stored['patch'].float(), torch.stack([w['patch'] for w in want]),
        atol=5e-3, rtol=5e-3)
    assert stored['label'].tolist() == setup['labels']


def test_resume_extends_and_matches_one_shot(setup, tmp_path):
    flags = ('--stats', setup['stats'], '--shard-size', '2')
    part = run(setup, tmp_path / 'lat', '--max-images', '3', *flags)
    assert part['complete'] and part['count'] == 3
    assert len(CachedLatentDataset(str(tmp_path / 'lat'))) == 3
    first = os.stat(tmp_path / 'lat' / 'shard_00000.safetensors')
    partial = os.stat(tmp_path / 'lat' / 'shard_00001.safetensors')

    full = run(setup, tmp_path / 'lat', *flags)
    assert full['count'] == len(FILES)
    assert [s['count'] for s in full['shards']] == [2, 2, 2, 1]
    again = os.stat(tmp_path / 'lat' / 'shard_00000.safetensors')
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino,
                                                 first.st_mtime_ns)
    # the partial last shard was rewritten (a rename gives a new inode)
    assert os.stat(tmp_path / 'lat' /
                   'shard_00001.safetensors').st_ino != partial.st_ino

    one_shot = run(setup, tmp_path / 'ref', *flags)
    assert full['shards'] == one_shot['shards']
    a, b = shard_tensors(tmp_path / 'lat'), shard_tensors(tmp_path / 'ref')
    assert set(a) == set(b)
    assert torch.equal(a['label'], b['label'])
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=4e-3, rtol=4e-3)

    # a complete folder is left alone
    mtimes = sorted(p.stat().st_mtime_ns
                    for p in (tmp_path / 'lat').glob('shard_*'))
    assert run(setup, tmp_path / 'lat', *flags)['count'] == len(FILES)
    assert mtimes == sorted(p.stat().st_mtime_ns
                            for p in (tmp_path / 'lat').glob('shard_*'))


def test_resume_refuses_other_settings(setup, tmp_path):
    run(setup, tmp_path / 'lat', '--max-images', '2')
    with pytest.raises(ValueError, match='has_flip'):
        run(setup, tmp_path / 'lat', '--no-flip')
    with pytest.raises(ValueError, match='more than'):
        run(setup, tmp_path / 'lat', '--max-images', '1')


def test_ranks_write_folders_that_merge_into_one_dataset(setup, tmp_path):
    cfg = load_config(setup['config'])
    tokenizer = build_tokenizer_from_config(cfg, setup['checkpoint'])
    dataset = tool.build_dataset(cfg, 'train', IMAGE, keep_transform=False)
    for rank in (0, 1):
        tool.extract_rank(tokenizer, dataset, str(tmp_path / f'rank_{rank}'),
                          rank=rank, world_size=2, batch_size=2,
                          dtype='float32', progress=False)
    meta = tool.merge_rank_folders(str(tmp_path), 2)
    assert meta['count'] == len(FILES) and meta['world_size'] == 2
    merged = CachedLatentDataset(str(tmp_path), use_flip=False)
    want = expected(setup)
    order = [0, 2, 4, 6, 1, 3, 5]  # rank 0's images, then rank 1's
    for i, j in enumerate(order):
        item = merged[i]
        assert item['data_samples']['gt_label'] == setup['labels'][j]
        torch.testing.assert_close(item['inputs']['query'], want[j]['query'],
                                   atol=1e-4, rtol=1e-4)


def test_set_center_crop_reaches_wrapped_datasets():
    init_default_scope('decq_plugin')
    cfg = dict(type='ConcatDataset', datasets=[
        dict(type='ImageFolderDataset', data_root='x',
             transform=dict(type='RAETrainCrop')),
        dict(type='RepeatDataset', times=2,
             dataset=dict(type='DemoImageDataset'))])
    assert tool.set_center_crop(cfg, 64) == ['DemoImageDataset']
    assert cfg['datasets'][0]['transform'] == dict(type='AdmCenterCrop',
                                                   size=64)
    assert 'transform' not in cfg['datasets'][1]['dataset']
