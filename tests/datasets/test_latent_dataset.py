import json
import pickle

import pytest
import torch
from mmengine.dataset import default_collate
from torch.utils.data import DataLoader

from decq_plugin.datasets.latent_dataset import (CachedLatentDataset,
                                                 LatentFolderError,
                                                 LatentShardWriter)

C, H, Q = 8, 2, 3


def _latents(n, seed, with_query=True):
    g = torch.Generator().manual_seed(seed)
    out = dict(patch=torch.randn(n, C, H, H, generator=g))
    if with_query:
        out['query'] = torch.randn(n, Q, C, generator=g)
    return out


def _data(n=10, with_query=True):
    lat = _latents(n, 0, with_query)
    flip = _latents(n, 1, with_query)
    labels = torch.arange(n) * 7 % 5
    return lat, flip, labels


def _write(out_dir, lat, flip, labels, batches, shard_size=4, **kwargs):
    writer = LatentShardWriter(str(out_dir), shard_size=shard_size,
                               tokenizer='decq_tiny', **kwargs)
    for lo, hi in batches:
        writer.add({k: v[lo:hi] for k, v in lat.items()}, labels[lo:hi],
                   None if flip is None else
                   {k: v[lo:hi] for k, v in flip.items()})
    return writer


@pytest.mark.parametrize('file_format', ['safetensors', 'pt'])
def test_round_trip(tmp_path, file_format):
    lat, flip, labels = _data()
    with _write(tmp_path, lat, flip, labels, [(0, 3), (3, 6), (6, 10)],
                file_format=file_format):
        pass
    meta = json.loads((tmp_path / 'meta.json').read_text())
    assert meta['complete'] and meta['count'] == 10
    assert [s['count'] for s in meta['shards']] == [4, 4, 2]
    assert [s['file'] for s in meta['shards']][2] == \
        f'shard_00002.{file_format}'
    assert meta['latent_shapes'] == dict(patch=[C, H, H], query=[Q, C])
    assert meta['num_queries'] == Q and meta['tokenizer'] == 'decq_tiny'
    assert meta['normalised'] is True and meta['has_flip'] is True
    ds = CachedLatentDataset(str(tmp_path), use_flip=False)
    assert len(ds) == 10 and ds.latent_shapes['query'] == (Q, C)
    for i in (0, 5, 9, 4, -1):
        item = ds[i]
        assert torch.equal(item['inputs']['patch'], lat['patch'][i])
        assert torch.equal(item['inputs']['query'], lat['query'][i])
        assert item['data_samples'] == dict(gt_label=int(labels[i]))
        assert item['inputs']['patch'].dtype == torch.float32


def test_flip_selection(tmp_path):
    lat, flip, labels = _data()
    _write(tmp_path, lat, flip, labels, [(0, 10)]).close()
    ds = CachedLatentDataset(str(tmp_path), use_flip=True)
    torch.manual_seed(0)
    picked_flip = []
    for _ in range(6):
        for i in range(10):
            item = ds[i]['inputs']
            is_flip = torch.equal(item['patch'], flip['patch'][i])
            ref = flip if is_flip else lat
            assert torch.equal(item['patch'], ref['patch'][i])
            assert torch.equal(item['query'], ref['query'][i])  # same pick
            picked_flip.append(is_flip)
    assert 10 < sum(picked_flip) < 50  # about half of 60


def test_resume_skips_written_shards(tmp_path):
    lat, flip, labels = _data()
    first = _write(tmp_path, lat, flip, labels, [(0, 3), (3, 9)])
    assert first.num_written == 8  # two full shards; sample 8 was buffered
    del first  # interrupted: no close()
    with pytest.raises(RuntimeError, match='stopped after 8'):
        CachedLatentDataset(str(tmp_path))
    shard0 = (tmp_path / 'shard_00000.safetensors').stat().st_mtime_ns
    resumed = LatentShardWriter(str(tmp_path), shard_size=4,
                                tokenizer='decq_tiny')
    assert list(resumed.completed_indices()) == list(range(8))
    resumed.add({k: v[8:] for k, v in lat.items()}, labels[8:],
                {k: v[8:] for k, v in flip.items()})
    resumed.close()
    assert (tmp_path / 'shard_00000.safetensors').stat().st_mtime_ns == shard0
    ds = CachedLatentDataset(str(tmp_path), use_flip=False)
    assert len(ds) == 10
    for i in range(10):
        assert torch.equal(ds[i]['inputs']['patch'], lat['patch'][i])
        assert ds[i]['data_samples']['gt_label'] == int(labels[i])
    with pytest.raises(ValueError, match='shard_size'):
        LatentShardWriter(str(tmp_path), shard_size=5, tokenizer='decq_tiny')
    done = LatentShardWriter(str(tmp_path), shard_size=4,
                             tokenizer='decq_tiny')
    assert done.complete and done.num_written == 10
    with pytest.raises(RuntimeError, match='complete'):
        done.add({k: v[:1] for k, v in lat.items()}, labels[:1])


def test_rae_latents_without_query_or_flip(tmp_path):
    lat, _, labels = _data(5, with_query=False)
    _write(tmp_path, {'patch': lat['patch'].half()}, None, labels,
           [(0, 5)], shard_size=2).close()
    meta = json.loads((tmp_path / 'meta.json').read_text())
    assert meta['num_queries'] == 0 and meta['dtype'] == 'float16'
    with pytest.raises(ValueError, match='use_flip'):
        CachedLatentDataset(str(tmp_path), use_flip=True)
    ds = CachedLatentDataset(str(tmp_path), use_flip=False, max_samples=4)
    assert len(ds) == 4 and set(ds[3]['inputs']) == {'patch'}
    assert torch.equal(ds[3]['inputs']['patch'],
                       lat['patch'][3].half().float())


def test_default_collate_and_pickling(tmp_path):
    lat, flip, labels = _data()
    _write(tmp_path, lat, flip, labels, [(0, 10)]).close()
    ds = CachedLatentDataset(str(tmp_path), use_flip=False)
    ds[0]  # opens a shard: spawned workers get a pickled copy without it
    ds = pickle.loads(pickle.dumps(ds))
    loader = DataLoader(ds, batch_size=4, collate_fn=default_collate)
    batches = list(loader)
    assert [b['inputs']['patch'].shape[0] for b in batches] == [4, 4, 2]
    first = batches[0]
    assert first['inputs']['patch'].shape == (4, C, H, H)
    assert first['inputs']['query'].shape == (4, Q, C)
    assert torch.equal(first['inputs']['patch'], lat['patch'][:4])
    assert torch.equal(first['data_samples']['gt_label'], labels[:4])


def test_writer_validation(tmp_path):
    lat, flip, labels = _data(4)
    writer = LatentShardWriter(str(tmp_path), shard_size=8)
    with pytest.raises(ValueError, match='labels'):
        writer.add(lat, labels[:3])
    writer.add(lat, labels, flip)
    with pytest.raises(ValueError, match='latents_flip'):
        writer.add(lat, labels)
    with pytest.raises(ValueError, match='latent shapes'):
        writer.add(dict(patch=lat['patch'][:, :4], query=lat['query']),
                   labels, flip)
    with pytest.raises(ValueError, match='shard_size'):
        LatentShardWriter(str(tmp_path / 'x'), shard_size=0)
    with pytest.raises(FileNotFoundError, match='extract_latents'):
        CachedLatentDataset(str(tmp_path / 'nothing'))


@pytest.mark.parametrize('file_format', ['safetensors', 'pt'])
def test_shard_that_disagrees_with_meta_names_file_and_key(tmp_path,
                                                           file_format):
    """A shard rewritten without a tensor (or with fewer rows) than
    meta.json records is refused with the file, the key and what to do,
    not a bare KeyError / IndexError."""
    lat, flip, labels = _data(8)
    _write(tmp_path, lat, flip, labels, [(0, 8)],
           file_format=file_format).close()
    shard = tmp_path / f'shard_00001.{file_format}'
    if file_format == 'safetensors':
        from safetensors.torch import load_file, save_file
        tensors = load_file(str(shard))
        tensors.pop('label')
        save_file(tensors, str(shard))
    else:
        tensors = torch.load(shard, weights_only=True)
        tensors.pop('label')
        torch.save(tensors, shard)
    ds = CachedLatentDataset(str(tmp_path), verify=False)
    ds[0]  # the first shard is intact
    with pytest.raises(LatentFolderError,
                       match=r"shard_00001\.\w+ has no tensor 'label'"):
        ds[5]
    # Cut rows: the last shard holds one row fewer than recorded.
    tensors = {k: v[:3] for k, v in tensors.items()}
    tensors['label'] = torch.zeros(3, dtype=torch.long)
    if file_format == 'safetensors':
        save_file(tensors, str(shard))
    else:
        torch.save(tensors, shard)
    ds = CachedLatentDataset(str(tmp_path), verify=False)
    with pytest.raises(LatentFolderError, match='has no row 3'):
        ds[7]


def _strip_checksums(folder) -> None:
    meta_path = folder / 'meta.json'
    meta = json.loads(meta_path.read_text())
    for shard in meta['shards']:
        shard.pop('sha256')
    meta_path.write_text(json.dumps(meta))


def test_shards_without_checksum_are_an_error_unless_allowed(tmp_path):
    from decq_plugin.datasets.latent_dataset import (verify_folder,
                                                     verify_summary)
    lat, flip, labels = _data(8)
    _write(tmp_path, lat, flip, labels, [(0, 8)]).close()
    _strip_checksums(tmp_path)
    with pytest.raises(LatentFolderError) as err:
        CachedLatentDataset(str(tmp_path))
    message = str(err.value)
    assert str(tmp_path / 'meta.json') in message
    assert 'allow_missing_checksums=True' in message
    ds = CachedLatentDataset(str(tmp_path), allow_missing_checksums=True)
    assert torch.equal(ds[5]['inputs']['patch'], lat['patch'][5]) or \
        torch.equal(ds[5]['inputs']['patch'], flip['patch'][5])
    problems = verify_folder(str(tmp_path))
    assert any('shard_00000.safetensors has no checksum' in p
               for p in problems)
    assert verify_folder(str(tmp_path), allow_missing_checksums=True) == []
    assert '2 carry none' in verify_summary(str(tmp_path))


@pytest.mark.parametrize('key', ['has_flip', 'tokenizer', 'shards.start'])
def test_meta_without_a_key_names_the_file_and_key(tmp_path, key):
    lat, flip, labels = _data(8)
    _write(tmp_path, lat, flip, labels, [(0, 8)]).close()
    meta_path = tmp_path / 'meta.json'
    meta = json.loads(meta_path.read_text())
    if key.startswith('shards.'):
        meta['shards'][1].pop(key.split('.')[1])
        shown = 'shards[1].start'
    else:
        meta.pop(key)
        shown = key
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(LatentFolderError) as err:
        CachedLatentDataset(str(tmp_path))
    assert str(meta_path) in str(err.value) and shown in str(err.value)
