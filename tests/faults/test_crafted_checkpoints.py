"""Crafted files on every loading path: nothing in them ever runs.

Each file is *plain data* (it loads with ``torch.load(weights_only=True)``
and no allowed globals), with Python source that would create a marker file
in every string slot MMEngine or a tool might read: ``meta['config']``
(which stock ``Runner.resume`` parses with ``Config.fromstring``),
``meta['cfg']``, the message hub and the top level. A second variant is a
pickle whose unpickling would create the marker. Every path of the issue is
tried: ``--resume`` (both stages), ``load_from``, ``tools/test.py``,
``tools/reconstruct.py``, ``tools/sample.py``, the Python API,
``tokenizer_ckpt``, ``guide_ckpt``, ``decode_with``, statistics files and
``.pt`` latent shards.
"""
import json
import os
import os.path as osp
import pickle

import pytest
import torch
from mmengine.config import Config

import fault_driver as D

pytestmark = pytest.mark.slow


def _source(marker: str) -> str:
    # No import statement: MMEngine parses a config lazily (imports become
    # placeholders, calls fail) when it takes an import for third-party,
    # which it does for the standard library in a virtualenv whose base
    # Python lives elsewhere. A builtin call runs under either parser.
    return f'open({marker!r}, "w").close()\nx = 1\n'


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def craft_plain(path: str, marker: str, epoch: int = 3) -> str:
    code = _source(marker)
    torch.save({
        'meta': {'config': code, 'cfg': code, 'epoch': epoch,
                 'iter': 2 * epoch, 'seed': 0, 'experiment_name': code},
        'state_dict': {'w': torch.zeros(1)},
        'message_hub': {'log_scalars': {}, 'runtime_info': {'cfg': code},
                        'resumed_keys': {}},
        'patch_mean': code, 'code': code}, path)
    allowed = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        torch.load(path, weights_only=True)  # plain data indeed
    finally:
        torch.serialization.add_safe_globals(allowed)
    return path


def craft_pickle(path: str, marker: str) -> str:
    with open(path, 'wb') as f:
        pickle.dump({'state_dict': _RunsCode(marker)}, f)
    return path


@pytest.fixture(scope='module')
def latents(tmp_path_factory):
    return D.write_latent_folder(str(tmp_path_factory.mktemp('lat')))


def _try(fn, *args, **kwargs) -> str:
    """Call ``fn``; return the error text (a refusal is expected)."""
    try:
        fn(*args, **kwargs)
    except SystemExit as err:
        return f'SystemExit: {err}'
    except Exception as err:  # noqa: BLE001 - any refusal will do
        return f'{type(err).__name__}: {err}'
    return ''


@pytest.mark.parametrize('stdlib_is_builtin', [True, False],
                         ids=['system-python', 'virtualenv'])
def test_payload_is_live(tmp_path, monkeypatch, stdlib_is_builtin):
    # Control: stock MMEngine parsing of meta['config'] runs the source,
    # whether MMEngine takes the standard library for built-in (system
    # Python, conda) or for third-party (a virtualenv whose base Python
    # lives elsewhere; MMEngine then parses imports lazily).
    import mmengine.config.config as mm_config
    import mmengine.config.utils as mm_utils
    real = mm_utils._is_builtin_module

    def is_builtin(name: str) -> bool:
        return real(name) if stdlib_is_builtin else False

    monkeypatch.setattr(mm_config, '_is_builtin_module', is_builtin)
    monkeypatch.setattr(mm_utils, '_is_builtin_module', is_builtin)
    marker = tmp_path / 'ran'
    Config.fromstring(_source(str(marker)), file_format='.py')
    assert marker.exists()


def _with_file(value, f: str):
    """``value`` with every ``'FILE'`` (also nested) replaced by ``f``."""
    if value == 'FILE':
        return f
    if isinstance(value, dict):
        return {k: _with_file(v, f) for k, v in value.items()}
    return value


def _paths(latents: str, tmp: str):
    """``(name, call(file))`` for every loading path."""
    train, test = D.load_tool('train'), D.load_tool('test')
    recon, sample = D.load_tool('reconstruct'), D.load_tool('sample')
    from decq_plugin.apis import (build_model_from_config,
                                  build_tokenizer_from_config)
    s1 = [D.STAGE1_CONFIG, '--cfg-options', *D.STAGE1_OPTIONS]
    s2 = [D.STAGE2_CONFIG, '--cfg-options', *D.stage2_options(latents)]
    image = osp.join(tmp, 'img.png')
    from PIL import Image
    Image.new('RGB', (64, 64), (120, 30, 200)).save(image)
    s2_opts = dict(a.split('=', 1) for a in D.STAGE2_OPTIONS
                   if a.startswith('model.'))
    s2_opts = {k: int(v) if v.isdigit() else v for k, v in s2_opts.items()}
    tiny_arch = dict(body_width=32, body_depth=1, body_heads=2,
                     head_width=32, head_depth=1, head_heads=2)
    work = osp.join(tmp, 'work')

    def stage2_with(**extra):
        def build(f):
            from decq_plugin.utils.launch import load_config
            cfg = load_config(D.STAGE2_CONFIG, s2_opts)
            for key, value in extra.items():
                *parents, last = key.split('.')
                node = cfg
                for part in parents:
                    node = node[part]
                node[last] = _with_file(value, f)
            if 'model.decode_with' in extra:
                rae = cfg.model.tokenizer.to_dict()
                rae.pop('condenser')
                rae.update(type='RAETokenizer', latent_stats=None)
                cfg.model.decode_with = dict(tokenizer=rae, ckpt=f)
            return build_model_from_config(cfg, None)
        return build

    return [
        ('train --resume (stage 1)', lambda f: train.main(
            [s1[0], '--work-dir', work + '1', '--resume', f, *s1[1:]])),
        ('train --resume (stage 2)', lambda f: train.main(
            [s2[0], '--work-dir', work + '2', '--resume', f, *s2[1:]])),
        ('train load_from', lambda f: train.main(
            [s1[0], '--work-dir', work + '3', *s1[1:], f'load_from={f}'])),
        ('tools/test.py', lambda f: test.main(
            [s1[0], f, '--work-dir', work + '4', *s1[1:]])),
        ('tools/reconstruct.py', lambda f: recon.main(
            [s1[0], f, image, '--out-dir', work + '5', *s1[1:]])),
        ('tools/sample.py', lambda f: sample.main(
            [s2[0], f, '--out-dir', work + '6', '--num-per-class', '1',
             *s2[1:]])),
        ('API build_model_from_config', lambda f: build_model_from_config(
            D.STAGE1_CONFIG, f)),
        ('API build_tokenizer_from_config',
         lambda f: build_tokenizer_from_config(D.STAGE1_CONFIG, f)),
        ('model.tokenizer_ckpt', stage2_with(**{'model.tokenizer_ckpt':
                                                'FILE'})),
        ('guide_ckpt', stage2_with(**{'model.guidance': dict(
            type='AutoGuidance', scale=1.5,
            guide=dict(type='DiTDH', arch=tiny_arch), guide_ckpt='FILE')})),
        ('decode_with', stage2_with(**{'model.decode_with': 'FILE'})),
        ('latent statistics', stage2_with(**{
            'model.tokenizer.latent_stats': 'FILE'})),
    ]


def _pt_shard_path(latents_pt: str, f: str) -> None:
    """Put file ``f`` in place of a .pt shard (checksum updated so the
    loader gets as far as reading it) and read the dataset."""
    from decq_plugin.datasets.latent_dataset import (CachedLatentDataset,
                                                     file_sha256)
    meta_path = osp.join(latents_pt, 'meta.json')
    meta = json.load(open(meta_path))
    target = osp.join(latents_pt, meta['shards'][0]['file'])
    with open(f, 'rb') as src, open(target, 'wb') as dst:
        dst.write(src.read())
    meta['shards'][0]['sha256'] = file_sha256(target)
    json.dump(meta, open(meta_path, 'w'))
    dataset = CachedLatentDataset(latents_pt, use_flip=False)
    dataset[0]


def test_no_loading_path_runs_checkpoint_content(tmp_path, latents):
    from decq_plugin.datasets.latent_dataset import LatentShardWriter
    marker = str(tmp_path / 'ran')
    files = {'plain': craft_plain(str(tmp_path / 'plain.pth'), marker),
             'pickle': craft_pickle(str(tmp_path / 'pickle.pth'), marker)}
    paths = _paths(latents, str(tmp_path))
    pt_folder = str(tmp_path / 'lat_pt')
    with LatentShardWriter(pt_folder, 4, 'pt') as writer:
        writer.add({'patch': torch.zeros(4, 32, 4, 4),
                    'query': torch.zeros(4, 8, 32)}, [0, 1, 2, 3])
    paths.append(('.pt latent shard',
                  lambda f: _pt_shard_path(pt_folder, f)))
    outcomes = []
    for name, call in paths:
        for kind, f in files.items():
            error = _try(call, f)
            outcomes.append((name, kind, error))
            assert not osp.exists(marker), (name, kind, error)
    # Every crafted file was refused or read as data only; record them.
    D.record(os.environ.get('DECQ_FAULT_LOG', ''), dict(
        suite='crafted', tried=len(outcomes),
        refused=sum(bool(e) for _, _, e in outcomes), ran=0))
    refused_pickles = [e for _, k, e in outcomes if k == 'pickle']
    assert all(refused_pickles), outcomes
    assert len(outcomes) == 2 * 13
