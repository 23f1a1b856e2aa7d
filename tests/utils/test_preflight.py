"""A full-size config with nothing downloaded: every tool lists every
missing file at once, with the config key that sets it, before building
anything and without a traceback or a network attempt."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from decq_plugin.utils import preflight
from decq_plugin.utils.launch import load_config

ROOT = Path(__file__).resolve().parents[2]
S1 = str(ROOT / 'configs/decq/'
         'decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py')
S2 = str(ROOT / 'configs/ldm/'
         'ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_8xb128-80e_in1k-256.py')
STAGE1_MISSING = [
    "train_dataloader.dataset.data_root: ImageNet train images folder "
    "(<wnid>/*.JPEG) not found: 'data/imagenet/train'",
    "val_dataloader.dataset.data_root: ImageNet val images folder "
    "(<wnid>/*.JPEG) not found: 'data/imagenet/val'",
    'model.tokenizer.encoder.weights_path: not set, and the VFM weights of '
    "'vit_base_patch14_reg4_dinov2'",
    "model.discriminator.weights_path: not set, and the discriminator "
    "weights of 'vit_small_patch8_224.dino'",
    'model.perceptual_loss.trunk_weights_path: not set, and the LPIPS vgg '
    'trunk vgg16-397923af.pth',
    'val_evaluator.2.feature_extractor: not set, and '
    'weights-inception-2015-12-05-6726825d.pth',
]


def _run(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE='1',
               TORCH_HOME=str(cwd / 'torch_home'),
               HF_HOME=str(cwd / 'hf_home'), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / 'tools' / tool),
                           *args], cwd=str(cwd), env=env, timeout=300,
                          capture_output=True, text=True)


def _assert_listed(proc, lines, count):
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert f'{count} missing files (nothing was built' in proc.stderr
    for line in lines:
        assert line in proc.stderr, (line, proc.stderr)


def test_train_lists_every_missing_file(tmp_path):
    proc = _run('train.py', S1, cwd=tmp_path)
    _assert_listed(proc, STAGE1_MISSING, len(STAGE1_MISSING))


def test_the_cfg_options_hint_only_where_a_config_key_is_missing(tmp_path):
    # a missing config key: the hint names --cfg-options
    proc = _run('train.py', S1, cwd=tmp_path)
    assert '; set each path with the key named, e.g. --cfg-options' \
        in proc.stderr
    # only command-line paths missing: no --cfg-options hint
    proc = _run('train.py', 'configs/gone.py', cwd=tmp_path)
    assert proc.returncode == 1
    assert "1 missing file (nothing was built):" in proc.stderr
    assert "config file not found: 'configs/gone.py'" in proc.stderr
    assert '--cfg-options' not in proc.stderr
    demo = str(ROOT / 'configs/demo/decq_tiny_1xb8-16e_demo-64.py')
    proc = _run('test.py', demo, 'gone.pth', cwd=tmp_path)
    assert "1 missing file (nothing was built):" in proc.stderr
    assert '--cfg-options' not in proc.stderr


def test_test_lists_the_checkpoint_too(tmp_path):
    proc = _run('test.py', S1, 'gone.pth', cwd=tmp_path)
    lines = ["checkpoint not found: 'gone.pth'",
             "test_dataloader.dataset.data_root: ImageNet val images folder "
             "(<wnid>/*.JPEG) not found: 'data/imagenet/val'",
             "test_evaluator.2.feature_extractor: not set"] + \
        STAGE1_MISSING[2:5]
    _assert_listed(proc, lines, len(lines))


def test_stage2_train_lists_checkpoint_stats_and_reference(tmp_path):
    proc = _run('train.py', S2, '--cfg-options',
                'model.tokenizer_ckpt=stage1/epoch_16.pth',
                'model.tokenizer.latent_stats=stats.pt', cwd=tmp_path)
    lines = [
        "train_dataloader.dataset.data_root: CachedLatentDataset data folder"
        " not found: 'data/latents/imagenet256'",
        "model.tokenizer_ckpt: stage-1 tokenizer checkpoint not found: "
        "'stage1/epoch_16.pth'",
        "model.tokenizer.latent_stats: latent statistics not found: "
        "'stats.pt'",
        "val_evaluator.reference: reference batch not found: "
        "'data/VIRTUAL_imagenet256_labeled.npz'",
        'val_evaluator.feature_extractor: not set']
    _assert_listed(proc, lines, len(lines))


def test_sample_reports_a_missing_checkpoint_without_traceback(tmp_path):
    proc = _run('sample.py', S2, 'ldm.pth', '--out-dir', 'out', '--metrics',
                '--reference', 'ref.npz', '--cfg-options',
                'model.tokenizer.latent_stats=stats.pt', cwd=tmp_path)
    lines = ["checkpoint not found: 'ldm.pth'",
             "--reference not found: 'ref.npz'",
             "model.tokenizer.latent_stats: latent statistics not found",
             '--inception-weights: not given, and weights-inception']
    _assert_listed(proc, lines, len(lines))


def test_extract_latents_lists_checkpoint_and_data(tmp_path):
    proc = _run('extract_latents.py', S1, 'gone.pth', '--out-dir', 'lat',
                '--stats', 'stats.pt', cwd=tmp_path)
    lines = ["checkpoint not found: 'gone.pth'",
             "latent statistics file (--stats) not found: 'stats.pt'",
             "train_dataloader.dataset.data_root: ImageNet train images "
             "folder (<wnid>/*.JPEG) not found"]
    _assert_listed(proc, lines, len(lines))


def test_no_network_attempt_when_offline(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError('the network was tried')

    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(socket, 'create_connection', no_network)
    monkeypatch.setattr(preflight, '_online', None)
    lines = preflight.missing_files(load_config(S1), preflight.TRAIN_PARTS)
    assert len(lines) == len(STAGE1_MISSING)


def test_network_off_without_the_variable(monkeypatch):
    def unreachable(*args, **kwargs):
        raise OSError('network is unreachable')

    import huggingface_hub.constants as hub
    monkeypatch.delenv('HF_HUB_OFFLINE')
    monkeypatch.setattr(hub, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(socket, 'create_connection', unreachable)
    monkeypatch.setattr(preflight, '_online', None)
    assert preflight.network_is_off()
    # ... and the process is offline now: no hub retries later.
    assert os.environ['HF_HUB_OFFLINE'] == '1' and hub.is_offline_mode()


def test_nothing_missing_when_every_file_is_there(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError('the network was tried')

    # Online as far as the variable says, yet no file needs the network.
    monkeypatch.delenv('HF_HUB_OFFLINE')
    monkeypatch.setattr(socket, 'create_connection', no_network)
    monkeypatch.setattr(preflight, '_online', None)
    monkeypatch.chdir(tmp_path)
    for split in ('train', 'val'):
        (tmp_path / 'data' / 'imagenet' / split).mkdir(parents=True)
    for name in ('vfm.safetensors', 'dino.safetensors', 'vgg.pth',
                 'inception.pth'):
        (tmp_path / name).write_bytes(b'x')
    cfg = load_config(S1, {
        'model.tokenizer.encoder.weights_path': 'vfm.safetensors',
        'model.discriminator.weights_path': 'dino.safetensors',
        'model.perceptual_loss.trunk_weights_path': 'vgg.pth',
        'val_evaluator.2.feature_extractor': dict(
            type='InceptionV3FeatureExtractor',
            weights_path='inception.pth')})
    assert preflight.missing_files(cfg, preflight.TRAIN_PARTS) == []


@pytest.mark.parametrize('config', sorted(
    str(p) for p in (ROOT / 'configs' / 'demo').glob('*.py')
    if not p.name.startswith('ldm')))
def test_demo_configs_need_no_file(config):
    assert preflight.missing_files(load_config(config),
                                   preflight.TRAIN_PARTS) == []
