"""NaN injection, damaged latent shards, bad configs and images: each one is
either survived with finite weights or refused with a message that names
the file and the config key or flag that fixes it."""
import os
import os.path as osp

import pytest
import torch

import fault_driver as D
from decq_plugin.datasets.latent_dataset import (CachedLatentDataset,
                                                 LatentFolderError,
                                                 verify_folder)
from decq_plugin.engine.checkpoint import safe_load_checkpoint
from decq_plugin.engine.checkpoint_files import non_finite_entries

LOG = os.environ.get('DECQ_FAULT_LOG', '')


def _argv(config, options, work):
    return [config, '--work-dir', work, '--cfg-options', *options]


# ------------------------------------------------------------- NaN ------
@pytest.mark.slow
@pytest.mark.parametrize('stage', ['stage1', 'stage2'])
def test_nan_sample_is_skipped_and_checkpoints_stay_finite(stage, tmp_path):
    if stage == 'stage1':
        config, options = D.STAGE1_CONFIG, D.STAGE1_OPTIONS
    else:
        latents = D.write_latent_folder(str(tmp_path / 'latents'))
        config, options = D.STAGE2_CONFIG, D.stage2_options(latents)
    work, log = str(tmp_path / 'work'), str(tmp_path / 'log')
    code = D.run_train(_argv(config, options, work), log=log, nan_sample=0)
    text = open(log).read()
    assert code == 0, text[-3000:]
    ckpt = safe_load_checkpoint(osp.join(work, 'epoch_3.pth'))
    bad = non_finite_entries({k: ckpt.get(k) for k in
                              ('state_dict', 'ema_state_dict', 'optimizer')})
    skips = ckpt['message_hub']['runtime_info']['nonfinite_skips']
    D.record(LOG, dict(suite='nan', stage=stage, skips=skips,
                       non_finite=len(bad)))
    assert bad == []
    # Sample 0 is in one batch an epoch: 3 epochs, 3 skips of each
    # optimizer that steps then (stage 1: the discriminator from epoch 2).
    expected = ({'tokenizer': 3, 'discriminator': 2} if stage == 'stage1'
                else {'optim_wrapper': 3})
    assert skips == expected
    assert 'skipped the update of optimizer' in text


@pytest.mark.slow
def test_nan_everywhere_stops_with_a_clear_error(tmp_path):
    latents = D.write_latent_folder(str(tmp_path / 'latents'), count=4)
    options = D.stage2_options(latents) + [
        'default_hooks.non_finite.max_consecutive=1']
    work, log = str(tmp_path / 'work'), str(tmp_path / 'log')
    # 4 samples, batch 4: every batch holds the NaN sample.
    code = D.run_train(_argv(D.STAGE2_CONFIG, options, work), log=log,
                       nan_sample=0)
    text = open(log).read()
    assert code != 0
    assert 'NonFiniteTrainingError' in text
    assert 'default_hooks.non_finite.max_consecutive' in text
    assert not [f for f in os.listdir(work) if f.endswith('.pth')]
    D.record(LOG, dict(suite='bad_input', name='nan everywhere', clear=True))


@pytest.mark.slow
def test_a_run_that_skipped_every_step_fails_without_a_checkpoint(tmp_path):
    """An all-NaN latent folder with valid checksums: every update is
    skipped, fewer than max_consecutive in a row; the run must not end
    with exit code 0 and an untrained checkpoint."""
    from decq_plugin.datasets.latent_dataset import LatentShardWriter
    latents = str(tmp_path / 'nan_latents')
    nan = float('nan')
    with LatentShardWriter(latents, shard_size=4, tokenizer='tiny') as w:
        for start in (0, 4):
            lat = {'patch': torch.full((4, 32, 4, 4), nan),
                   'query': torch.full((4, 8, 32), nan)}
            w.add(lat, torch.arange(start, start + 4) % 8, lat)
    assert verify_folder(latents) == []
    work, log = str(tmp_path / 'work'), str(tmp_path / 'log')
    code = D.run_train(_argv(D.STAGE2_CONFIG, D.stage2_options(latents),
                             work), log=log)
    text = open(log).read()
    assert code != 0, text[-3000:]
    assert 'NonFiniteTrainingError' in text and 'untrained' in text
    assert "'optim_wrapper' (2 skipped, none applied)" in text
    assert not [f for f in os.listdir(work) if f.endswith('.pth')]
    D.record(LOG, dict(suite='bad_input', name='all steps skipped',
                       clear=True))


@pytest.mark.slow
def test_non_finite_guard_can_be_turned_off(tmp_path):
    latents = D.write_latent_folder(str(tmp_path / 'latents'), count=4)
    options = D.stage2_options(latents) + [
        'default_hooks.non_finite=None', 'train_cfg.max_epochs=1']
    work, log = str(tmp_path / 'work'), str(tmp_path / 'log')
    code = D.run_train(_argv(D.STAGE2_CONFIG, options, work), log=log)
    text = open(log).read()
    assert code == 0, text[-3000:]
    assert 'default_hooks.non_finite=None: that hook is off' in text
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
    D.record(LOG, dict(suite='bad_input', name='non_finite=None',
                       clear=True))


# ----------------------------------------------------------- shards -----
def _damage(path: str, how: str) -> None:
    data = open(path, 'rb').read()
    if how == 'bit_flip':
        i = len(data) - 5
        data = data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:]
    elif how == 'truncated':
        data = data[:len(data) // 2]
    elif how == 'empty':
        data = b''
    elif how == 'bad_header':
        data = b'\xff' * 16 + data[16:]
    open(path, 'wb').write(data)


@pytest.mark.parametrize('how',
                         ['bit_flip', 'truncated', 'empty', 'bad_header'])
def test_damaged_shard_is_named(tmp_path, how):
    folder = D.write_latent_folder(str(tmp_path / 'lat'))
    shard = osp.join(folder, 'shard_00001.safetensors')
    _damage(shard, how)
    dataset = CachedLatentDataset(folder)
    dataset[0]  # shard 0 is intact
    with pytest.raises(LatentFolderError) as err:
        dataset[len(dataset) - 1]
    assert shard in str(err.value) and '--verify' in str(err.value)
    # Without the checksum, the reader itself names the file.
    if how != 'bit_flip':
        with pytest.raises(LatentFolderError, match='shard_00001'):
            CachedLatentDataset(folder, verify=False)[len(dataset) - 1]
    problems = verify_folder(folder)
    assert len(problems) == 1 and shard in problems[0]
    tool = D.load_tool('extract_latents')
    with pytest.raises(SystemExit) as code:
        tool.main(['--verify', folder])
    assert code.value.code == 1
    D.record(LOG, dict(suite='bad_input', name=f'shard {how}', clear=True))


def test_intact_folder_verifies(tmp_path, capsys):
    folder = D.write_latent_folder(str(tmp_path / 'lat'))
    assert verify_folder(folder) == []
    D.load_tool('extract_latents').main(['--verify', folder])
    assert 'every shard matches' in capsys.readouterr().out


def test_shards_without_checksums_are_refused_unless_allowed(tmp_path,
                                                            capsys):
    import json
    folder = D.write_latent_folder(str(tmp_path / 'lat'))
    meta = json.load(open(osp.join(folder, 'meta.json')))
    for shard in meta['shards']:
        del shard['sha256']
    json.dump(meta, open(osp.join(folder, 'meta.json'), 'w'))
    with pytest.raises(LatentFolderError, match='allow_missing_checksums'):
        CachedLatentDataset(folder)
    tool = D.load_tool('extract_latents')
    with pytest.raises(SystemExit) as code:
        tool.main(['--verify', folder])
    assert code.value.code == 1
    out = capsys.readouterr().out
    assert 'has no checksum' in out and 'every shard matches' not in out
    tool.main(['--verify', folder, '--allow-missing-checksums'])
    assert '2 carry none and were not verified' in capsys.readouterr().out
    D.record(LOG, dict(suite='bad_input', name='shards without checksum',
                       clear=True))


def test_half_written_meta_is_named(tmp_path):
    folder = D.write_latent_folder(str(tmp_path / 'lat'))
    meta = osp.join(folder, 'meta.json')
    text = open(meta).read()
    open(meta, 'w').write(text[:len(text) // 2])
    with pytest.raises(LatentFolderError, match='meta.json'):
        CachedLatentDataset(folder)
    D.record(LOG, dict(suite='bad_input', name='meta.json cut', clear=True))


@pytest.mark.slow
def test_latents_of_another_tokenizer_fail_before_training(tmp_path):
    from decq_plugin.datasets.latent_dataset import LatentShardWriter
    folder = str(tmp_path / 'other')
    with LatentShardWriter(folder, 4, tokenizer='other') as writer:
        writer.add({'patch': torch.zeros(4, 16, 4, 4)}, [0, 1, 2, 3],
                   {'patch': torch.zeros(4, 16, 4, 4)})
    train = D.load_tool('train')
    options = D.stage2_options(folder)
    with pytest.raises(ValueError) as err:
        train.main(_argv(D.STAGE2_CONFIG, options, str(tmp_path / 'w')))
    text = str(err.value)
    assert folder in text and 'train_dataloader.dataset.data_root' in text
    D.record(LOG, dict(suite='bad_input', name='other tokenizer',
                       clear=True))


# ----------------------------------------------------------- configs ----
def test_misspelt_top_level_key_is_an_error(tmp_path, capsys):
    train = D.load_tool('train')
    with pytest.raises(SystemExit) as err:
        train.main([D.STAGE1_CONFIG, '--work-dir', str(tmp_path),
                    '--cfg-options', 'trian_cfg.max_epochs=1'])
    text = str(err.value)
    assert "'trian_cfg' (did you mean 'train_cfg'?)" in text
    assert D.STAGE1_CONFIG in text and 'allow_unknown_keys' in text
    # --cfg-options typos are reported on stderr whatever the warning
    # filters are.
    assert 'trian_cfg.max_epochs' in capsys.readouterr().err
    from decq_plugin.utils.launch import load_config
    cfg = load_config(D.STAGE1_CONFIG, {'trian_cfg': dict(max_epochs=1),
                                        'allow_unknown_keys': True})
    assert cfg.trian_cfg.max_epochs == 1  # opted out explicitly
    D.record(LOG, dict(suite='bad_input', name='trian_cfg', clear=True))


def test_misspelt_nested_key_is_an_error():
    from decq_plugin.apis import build_model_from_config
    with pytest.raises(ValueError, match=r"\['widht'\].*decoder.arch"):
        build_model_from_config(D.STAGE1_CONFIG, cfg_options={
            'model.tokenizer.decoder.arch.widht': 64})
    D.record(LOG, dict(suite='bad_input', name='decoder.arch.widht',
                       clear=True))


@pytest.mark.slow
def test_partial_load_from_is_an_error_unless_allowed(tmp_path):
    from decq_plugin.apis import build_model_from_config
    from decq_plugin.engine.checkpoint import StateDictMismatchError
    options = dict(a.split('=', 1) for a in D.STAGE1_OPTIONS
                   if a.startswith('model.'))
    model = build_model_from_config(D.STAGE1_CONFIG, cfg_options={
        k: int(v) if v.isdigit() else v for k, v in options.items()})
    state = {k: v for k, v in model.state_dict().items()
             if not k.startswith('discriminator.')}
    path = str(tmp_path / 'partial.pth')
    torch.save({'state_dict': state}, path)
    train = D.load_tool('train')
    argv = _argv(D.STAGE1_CONFIG, D.STAGE1_OPTIONS + [
        f'load_from={path}', 'train_cfg.max_epochs=1',
        'train_dataloader.dataset.samples_per_epoch=4'], str(tmp_path / 'w'))
    with pytest.raises(StateDictMismatchError) as err:
        train.main(argv)
    assert path in str(err.value) and 'allow_partial_load_from' in str(
        err.value)
    train.main(argv + ['allow_partial_load_from=True'])  # opted out
    D.record(LOG, dict(suite='bad_input', name='partial load_from',
                       clear=True))


# ------------------------------------------------------------ images ----
@pytest.mark.parametrize('content', [b'', b'\x89PNG\r\n\x1a\n broken'])
def test_bad_image_is_named(tmp_path, content):
    from decq_plugin.datasets.image_folder import (CorruptImageError,
                                                   ImageFolderDataset)
    folder = tmp_path / 'images' / 'cls'
    folder.mkdir(parents=True)
    bad = folder / 'bad.png'
    bad.write_bytes(content)
    dataset = ImageFolderDataset(str(tmp_path / 'images'))
    with pytest.raises(CorruptImageError, match='bad.png'):
        dataset[0]
    D.record(LOG, dict(suite='bad_input', name='bad image', clear=True))
