"""An exported folder from someone else: load_pretrained runs nothing it
names, checks its files against SHA256SUMS, names a damaged file; the
export writes its files with the permissions the umask gives."""
import json
import os
import os.path as osp
import re
import shutil
import stat
import subprocess

import pytest
import torch

from decq_plugin.apis import load_pretrained
from decq_plugin.apis.pretrained import PretrainedFormatError
from decq_plugin.apis.pretrained_files import write_checksums
from decq_plugin.registry import MODELS
from decq_plugin.utils.safe_config import UnsafeConfigError

from tiny_models import DEMO_DECQ as DECQ
from tiny_models import build_demo_decq, load_tool

OPTS = ['--cfg-options', 'model.discriminator=None']
FILES = ('config.json', 'model.safetensors', 'SHA256SUMS')


def _export_tool():
    return load_tool('export', 'decq_tool_export_safety')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    model = build_demo_decq()
    path = str(tmp_path_factory.mktemp('ckpt') / 'epoch_1.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


@pytest.fixture(scope='module')
def exported(checkpoint, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('export') / 'decq')
    _export_tool().main([DECQ, checkpoint, out] + OPTS)
    return out


@pytest.fixture
def folder(exported, tmp_path):
    """A fresh copy of the export to tamper with."""
    return shutil.copytree(exported, str(tmp_path / 'copy'))


def _edit_config(folder: str, edit) -> None:
    """Change config.json and write matching checksums (as an attacker
    can)."""
    path = osp.join(folder, 'config.json')
    with open(path) as f:
        meta = json.load(f)
    edit(meta)
    with open(path, 'w') as f:
        json.dump(meta, f)
    write_checksums(folder, ('config.json', 'model.safetensors'))


def _payloads(marker: str) -> dict:
    def top(meta):
        meta['model'] = dict(type='os.system', command=f'touch {marker}')

    def encoder(meta):
        meta['model']['encoder'] = dict(type='subprocess.call',
                                        args=['touch', marker])

    def decoder(meta):
        meta['model']['decoder']['type'] = 'os.system'

    def scoped(meta):
        meta['model']['encoder']['_scope_'] = 'mmpretrain'

    return {'model.type': top, 'model.encoder.type': encoder,
            'model.decoder.type': decoder, 'model.encoder._scope_': scoped}


@pytest.mark.parametrize('key', ['model.type', 'model.encoder.type'])
def test_payload_would_run_through_a_plain_build(folder, tmp_path, key):
    """The control: the same config.json content, given to the registry
    as the loader used to, creates the marker."""
    marker = str(tmp_path / 'MARKER')
    _edit_config(folder, _payloads(marker)[key])
    with open(osp.join(folder, 'config.json')) as f:
        model = json.load(f)['model']
    try:
        MODELS.build(model)
    except Exception:  # noqa: BLE001 - fails after the payload ran
        pass
    assert osp.exists(marker)


@pytest.mark.parametrize('key', list(_payloads('m')))
def test_payload_folder_runs_nothing(folder, tmp_path, key):
    marker = str(tmp_path / 'MARKER')
    _edit_config(folder, _payloads(marker)[key])
    with pytest.raises(UnsafeConfigError) as err:
        load_pretrained(folder)
    assert f'config.json: {key}:' in str(err.value)
    assert not osp.exists(marker)


def test_run_files_are_not_exported(checkpoint, tmp_path):
    """The VFM file a run named (weights_path) is not referenced by an
    export that stores the VFM, so the export loads elsewhere."""
    vfm = str(tmp_path / 'vfm.pth')
    torch.save({}, vfm)
    out = str(tmp_path / 'decq')
    _export_tool().main([DECQ, checkpoint, out] + OPTS + [
        f'model.tokenizer.encoder.weights_path={vfm}'])
    with open(osp.join(out, 'config.json')) as f:
        encoder = json.load(f)['model']['encoder']
    assert encoder['weights_path'] is None and not encoder['pretrained']
    assert type(load_pretrained(out)).__name__ == 'DecQTokenizer'


@pytest.mark.parametrize('key,value,error', [
    ('model.encoder.weights_path', '/tmp/any.pth', PretrainedFormatError),
    ('model.encoder.model_kwargs.checkpoint_path', '/tmp/any.pth',
     PretrainedFormatError),
    ('model.latent_stats', '/tmp/stats.pth', PretrainedFormatError),
    ('model.init_cfg', dict(type='Pretrained', checkpoint='/tmp/any.pth'),
     UnsafeConfigError),
])
def test_file_paths_in_config_refused(folder, key, value, error):
    """An exported config reads no file a stranger names."""
    def named_file(meta):
        *parents, leaf = key.split('.')[1:]
        target = meta['model']
        for name in parents:
            target = target[name]
        target[leaf] = value
        meta['model']['encoder']['pretrained'] = True

    _edit_config(folder, named_file)
    with pytest.raises(error, match=re.escape(key)):
        load_pretrained(folder)


def _flip_byte(path: str, offset: int) -> None:
    with open(path, 'r+b') as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


@pytest.mark.parametrize('name', ['model.safetensors', 'config.json'])
def test_bit_flip_is_named(folder, name):
    path = osp.join(folder, name)
    _flip_byte(path, os.path.getsize(path) - 40)
    with pytest.raises(PretrainedFormatError) as err:
        load_pretrained(folder)
    assert f"{name}' is damaged" in str(err.value)


def _truncate(path: str) -> None:
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize('name,why', [
    ('model.safetensors', 'not a readable safetensors file'),
    ('config.json', 'not valid JSON')])
def test_truncated_file_is_named(folder, name, why):
    _truncate(osp.join(folder, name))
    with pytest.raises(PretrainedFormatError, match=f"{name}' is damaged"):
        load_pretrained(folder)  # the checksum tells first
    os.remove(osp.join(folder, 'SHA256SUMS'))
    with pytest.warns(UserWarning, match='unverified'):
        with pytest.raises(PretrainedFormatError) as err:
            load_pretrained(folder, allow_unverified=True)
    assert f"{name}' is {why}" in str(err.value)
    assert 'truncated or damaged' in str(err.value)


def test_deeply_nested_config_is_named(folder):
    with open(osp.join(folder, 'config.json'), 'w') as f:
        f.write('{"model": ' * 100000)
    write_checksums(folder, ('config.json', 'model.safetensors'))
    with pytest.raises(PretrainedFormatError,
                       match="config.json' nests too deeply"):
        load_pretrained(folder)


def test_weights_of_another_shape_are_named(folder):
    from safetensors.torch import load_file, save_file
    path = osp.join(folder, 'model.safetensors')
    state = load_file(path)
    state['decoder.head.weight'] = state['decoder.head.weight'][:-1]
    save_file(state, path)
    write_checksums(folder, ('config.json', 'model.safetensors'))
    with pytest.raises(PretrainedFormatError,
                       match=r"model.safetensors' does not fit config.json: "
                       r'1 shape mismatches, e.g. \[.decoder.head.weight'):
        load_pretrained(folder)


def test_export_without_checksums(folder):
    """Exports from before SHA256SUMS are refused, saying what to do;
    accepted with a warning when asked."""
    os.remove(osp.join(folder, 'SHA256SUMS'))
    with pytest.raises(PretrainedFormatError,
                       match='no SHA256SUMS.*allow_unverified=True'):
        load_pretrained(folder)
    with pytest.warns(UserWarning, match='unverified'):
        loaded = load_pretrained(folder, allow_unverified=True)
    assert type(loaded).__name__ == 'DecQTokenizer'


def test_checksums_match_sha256sum_format(exported):
    with open(osp.join(exported, 'SHA256SUMS')) as f:
        names = [line.split('  ')[1] for line in f.read().splitlines()]
    assert names == ['config.json', 'model.safetensors']
    if shutil.which('sha256sum'):
        out = subprocess.run(['sha256sum', '-c', 'SHA256SUMS'],
                             cwd=exported, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize('umask,mode', [(0o022, 0o644), (0o077, 0o600),
                                        (0o002, 0o664)])
def test_export_follows_umask(checkpoint, tmp_path, umask, mode):
    out = str(tmp_path / 'decq')
    old = os.umask(umask)
    try:
        _export_tool().main([DECQ, checkpoint, out] + OPTS)
    finally:
        os.umask(old)
    modes = {n: stat.S_IMODE(os.stat(osp.join(out, n)).st_mode)
             for n in FILES}
    assert modes == {n: mode for n in FILES}
    assert sorted(os.listdir(out)) == sorted(FILES)  # no temporary files
