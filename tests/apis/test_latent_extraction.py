"""decq_plugin.apis.extract_latents and its inputs called from Python (no
command line): latents equal ``tokenizer.encode`` (flips included), resuming
encodes only what is missing, statistics and the ADM crop from a config."""
import json

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image
from torch.utils.data import Dataset

from decq_plugin.apis import (build_extraction_dataset,
                              build_extraction_tokenizer, extract_latents)
from decq_plugin.datasets.latent_dataset import CachedLatentDataset
from decq_plugin.registry import MODELS

from tiny_models import TINY_TOKENIZER as TOKENIZER

IMAGE = 32


class Images(Dataset):
    """``n`` fixed random images [3, 32, 32] in [0, 1], labels ``i % 3``."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, IMAGE, IMAGE, generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return dict(inputs=self.images[i], data_samples=dict(gt_label=i % 3))


@pytest.fixture(scope='module')
def tokenizer():
    init_default_scope('decq_plugin')
    torch.manual_seed(0)
    return MODELS.build(TOKENIZER).eval()


def shards(folder):
    from safetensors.torch import load_file
    meta = json.loads((folder / 'meta.json').read_text())
    parts = [load_file(str(folder / s['file'])) for s in meta['shards']]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def count_encoded(tokenizer, monkeypatch) -> list:
    """Images per ``tokenizer.encode`` call, recorded while patched."""
    calls = []
    original = tokenizer.encode

    def encode(images, *args, **kwargs):
        calls.append(images.shape[0])
        return original(images, *args, **kwargs)

    monkeypatch.setattr(tokenizer, 'encode', encode)
    return calls


def test_latents_equal_tokenizer_encode_with_flips(tokenizer, tmp_path):
    data = Images(5)
    meta, encoded = extract_latents(tokenizer, data, str(tmp_path),
                                    batch_size=2, shard_size=3,
                                    dtype='float32', progress=False,
                                    tokenizer_name='tiny',
                                    settings=dict(split='train'))
    assert encoded == 5 and meta['count'] == 5 and meta['complete']
    assert meta['has_flip'] and not meta['normalised']
    assert meta['tokenizer'] == 'tiny' and meta['split'] == 'train'
    assert [s['count'] for s in meta['shards']] == [3, 2]
    assert all(len(s['sha256']) == 64 for s in meta['shards'])
    stored = shards(tmp_path)
    with torch.no_grad():
        plain = tokenizer.encode(data.images)
        flipped = tokenizer.encode(data.images.flip(-1))
    for key in ('patch', 'query'):
        torch.testing.assert_close(stored[key], plain[key], atol=1e-5,
                                   rtol=1e-5)
        torch.testing.assert_close(stored[f'{key}_flip'], flipped[key],
                                   atol=1e-5, rtol=1e-5)
    assert stored['label'].tolist() == [0, 1, 2, 0, 1]
    item = CachedLatentDataset(str(tmp_path), use_flip=False)[3]
    assert item['data_samples']['gt_label'] == 0
    assert item['inputs']['patch'].shape == (32, 2, 2)


def test_resume_encodes_only_what_is_missing(tokenizer, tmp_path,
                                             monkeypatch):
    data = Images(7)
    kwargs = dict(batch_size=2, shard_size=2, flip=False, progress=False)
    meta, _ = extract_latents(tokenizer, data, str(tmp_path), num_images=3,
                              **kwargs)
    assert meta['count'] == 3 and [s['count'] for s in meta['shards']] == [
        2, 1]
    first = (tmp_path / 'shard_00000.safetensors').stat()
    calls = count_encoded(tokenizer, monkeypatch)
    meta, encoded = extract_latents(tokenizer, data, str(tmp_path), **kwargs)
    # The full shard is kept; the partial one (image 2) is encoded again.
    assert encoded == sum(calls) == 5 and meta['count'] == 7
    again = (tmp_path / 'shard_00000.safetensors').stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino,
                                                 first.st_mtime_ns)
    calls.clear()
    assert extract_latents(tokenizer, data, str(tmp_path), **kwargs) == (
        meta, 0)
    assert calls == []
    # Another dtype in the same folder is refused.
    with pytest.raises(ValueError, match='dtype'):
        extract_latents(tokenizer, data, str(tmp_path),
                        **dict(kwargs, dtype='float32'))


def test_bad_arguments_are_named(tokenizer, tmp_path):
    with pytest.raises(ValueError, match='dtype'):
        extract_latents(tokenizer, Images(2), str(tmp_path), dtype='int8')
    with pytest.raises(ValueError, match='shard_size'):
        extract_latents(tokenizer, Images(2), str(tmp_path), shard_size=0)


def test_tokenizer_and_dataset_from_a_config(tokenizer, tmp_path):
    folder = tmp_path / 'images' / 'cls'
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, (w, h) in enumerate([(48, 40), (40, 56)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                        ).save(folder / f'{k}.png')
    checkpoint = tmp_path / 'tok.pth'
    torch.save({'state_dict': tokenizer.state_dict()}, checkpoint)
    stats = {}
    for key, shape in tokenizer.latent_shapes.items():
        stats[f'{key}_mean'] = torch.full(shape, 0.5)
        stats[f'{key}_var'] = torch.full(shape, 4.0)
    torch.save(stats, tmp_path / 'stats.pt')
    cfg = Config(dict(
        model=dict(TOKENIZER, latent_stats=str(tmp_path / 'stats.pt')),
        train_dataloader=dict(dataset=dict(
            type='ImageFolderDataset', data_root=str(tmp_path / 'images'),
            labelled=True, transform=dict(type='RAETrainCrop', resize=40,
                                          crop=32)))))
    loaded = build_extraction_tokenizer(cfg.copy(), str(checkpoint))
    assert bool(loaded.normalizer.enabled)  # the config's statistics file
    raw = build_extraction_tokenizer(cfg.copy(), str(checkpoint), 'none')
    assert not bool(raw.normalizer.enabled)
    with pytest.raises(FileNotFoundError, match='missing.pt'):
        build_extraction_tokenizer(cfg.copy(), str(checkpoint),
                                   str(tmp_path / 'missing.pt'))
    dataset = build_extraction_dataset(cfg, 'train', IMAGE)
    assert [dataset[i]['inputs'].shape for i in range(2)] == [
        (3, IMAGE, IMAGE)] * 2
    meta, _ = extract_latents(loaded, dataset, str(tmp_path / 'lat'),
                              dtype='float32', progress=False)
    assert meta['normalised'] and meta['count'] == 2
    with torch.no_grad():
        want = loaded.encode(dataset[1]['inputs'][None])['query'][0]
        raw_query = raw.encode(dataset[1]['inputs'][None])['query'][0]
    got = CachedLatentDataset(str(tmp_path / 'lat'),
                              use_flip=False)[1]['inputs']['query']
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, (raw_query - 0.5) / (4.0 + 1e-5)**0.5,
                               atol=1e-5, rtol=1e-5)


def test_progress_bar_label_names_the_folder_once(tokenizer, tmp_path,
                                                  capsys):
    """The folder is often called ``latents``: the bar must not read
    'latents latents'."""
    folder = tmp_path / 'latents'
    extract_latents(tokenizer, Images(2), str(folder) + '/', batch_size=2,
                    flip=False, progress=True)
    err = capsys.readouterr().err
    assert 'encoding -> latents' in err
    assert 'latents latents' not in err


def test_encoding_runs_without_autograd(tokenizer, tmp_path, monkeypatch):
    """Extraction encodes under no_grad: a graph through the frozen
    encoder would hold every activation of the batch (and run out of GPU
    memory at the batch sizes extraction uses)."""
    grad_modes = []
    original = tokenizer.encode

    def encode(images, *args, **kwargs):
        grad_modes.append(torch.is_grad_enabled())
        out = original(images, *args, **kwargs)
        assert not any(v.requires_grad for v in out.values())
        return out

    monkeypatch.setattr(tokenizer, 'encode', encode)
    extract_latents(tokenizer, Images(4), str(tmp_path / 'lat'),
                    batch_size=2, flip=True, progress=False)
    assert grad_modes and not any(grad_modes)
