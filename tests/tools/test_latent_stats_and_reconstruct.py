"""tools/compute_latent_stats.py and tools/reconstruct.py on a tiny DecQ
tokenizer and a folder of generated images."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from decq_plugin.apis import build_tokenizer_from_config
from decq_plugin.datasets.transforms import AdmCenterCrop
from decq_plugin.models.tokenizers.latent_stats import LatentStatsAccumulator

from tiny_models import load_tool

ROOT = Path(__file__).resolve().parents[2]

CONFIG = '''
default_scope = 'decq_plugin'
model = dict(
    type='AutoencoderModel',
    perceptual_loss=None,
    tokenizer=dict(
        type='DecQTokenizer',
        encoder=dict(type='TimmViTEncoder', pretrained=False, input_size=28,
                     model_kwargs=dict(embed_dim=32, depth=4, num_heads=2)),
        decoder=dict(type='ViTPixelDecoder', patch_size=16,
                     arch=dict(width=32, depth=1, num_heads=2, mlp_dim=64)),
        condenser=dict(num_queries=2, layers=(1, 3), num_heads=2)))
train_dataloader = dict(
    batch_size=3, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageFolderDataset', data_root='{root}',
                 transform=dict(type='AdmCenterCrop', size=32)))
'''


def _load_tool(name: str):
    return load_tool(name, f'decq_tool_{name}')


@pytest.fixture
def setup(tmp_path):
    root = tmp_path / 'images'
    root.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(40, 48), (36, 36), (64, 40), (50, 50),
                                (48, 70)]):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f'img{i}.png')
    (root / 'broken.png').write_bytes(b'not an image')
    config = tmp_path / 'tiny_decq.py'
    config.write_text(CONFIG.format(root=root))
    torch.manual_seed(0)
    tok = build_tokenizer_from_config(str(config))
    ckpt = tmp_path / 'tok.pth'
    state = {f'tokenizer.{k}': v for k, v in tok.state_dict().items()}
    torch.save({'state_dict': state, 'meta': {}}, ckpt)
    return root, str(config), str(ckpt), tok


def _good_images(root: Path) -> torch.Tensor:
    crop = AdmCenterCrop(32)
    return torch.stack([
        crop(Image.open(p).convert('RGB'))
        for p in sorted(root.glob('img*.png'))
    ])


def test_accumulator_matches_torch_mean_and_var():
    gen = torch.Generator().manual_seed(0)
    z = {'patch': torch.randn(10, 3, 2, 2, generator=gen) * 2 + 1,
         'query': torch.randn(10, 4, 3, generator=gen)}
    acc = LatentStatsAccumulator()
    acc.update({k: v[:4] for k, v in z.items()})
    other = LatentStatsAccumulator()
    other.update({k: v[4:] for k, v in z.items()})
    acc.merge(other)
    stats = acc.result()
    assert int(stats['count']) == 10
    for key in z:
        assert torch.allclose(stats[f'{key}_mean'], z[key].mean(0),
                              atol=1e-6)
        assert torch.allclose(stats[f'{key}_var'], z[key].var(0), atol=1e-5)
    with pytest.raises(ValueError, match='batch sizes differ'):
        acc.update({'patch': z['patch'][:2], 'query': z['query'][:3]})


def test_compute_latent_stats_tool(setup, tmp_path):
    root, config, ckpt, tok = setup
    (root / 'broken.png').unlink()  # a clean folder for this one
    out = tmp_path / 'stats' / 'stats.pt'
    _load_tool('compute_latent_stats').main(
        [config, ckpt, '--out', str(out), '--device', 'cpu'])
    stats = torch.load(out, weights_only=True)
    with torch.no_grad():
        z = tok.encode(_good_images(root), normalize=False)
    assert int(stats['count']) == 5
    for key in ('patch', 'query'):
        assert torch.allclose(stats[f'{key}_mean'], z[key].mean(0),
                              atol=1e-5)
        assert torch.allclose(stats[f'{key}_var'], z[key].var(0), atol=1e-4)
    # The file makes a tokenizer normalise its own latents to mean 0.
    tok.normalizer.load(str(out))
    with torch.no_grad():
        normed = tok.encode(_good_images(root))
    assert normed['patch'].mean(0).abs().max() < 1e-4


def test_reconstruct_tool_writes_pairs_and_skips_corrupt(setup, tmp_path,
                                                         capsys):
    root, config, ckpt, tok = setup
    out_dir = tmp_path / 'recon'
    grid = tmp_path / 'grid.png'
    _load_tool('reconstruct').main([
        config, ckpt, str(root), '--out-dir', str(out_dir), '--grid',
        str(grid), '--device', 'cpu', '--batch-size', '2'
    ])
    captured = capsys.readouterr()
    assert 'broken.png' in captured.err  # named, skipped, nothing lost
    pairs = sorted(out_dir.glob('*_recon.png'))
    assert [p.name for p in pairs] == [f'img{i}_recon.png' for i in range(5)]
    pair = np.asarray(Image.open(pairs[0]))
    assert pair.shape == (36, 70, 3)  # two 32 px images, 2 px padding
    original = _good_images(root)[0]
    left = torch.from_numpy(pair[2:34, 2:34].copy()).permute(2, 0, 1) / 255
    assert torch.allclose(left, original, atol=1 / 255 + 1e-6)
    with torch.no_grad():
        recon = tok.reconstruct(original[None])[0]
    right = torch.from_numpy(pair[2:34, 36:68].copy()).permute(2, 0, 1) / 255
    assert torch.allclose(right, recon, atol=1 / 255 + 1e-6)
    assert Image.open(grid).size[0] > 4 * 32


def test_reconstruct_tool_missing_input(setup, tmp_path):
    _, config, ckpt, _ = setup
    with pytest.raises(FileNotFoundError, match='nowhere.png'):
        _load_tool('reconstruct').main(
            [config, ckpt, str(tmp_path / 'nowhere.png')])


def test_reconstruct_tool_reports_every_missing_file_cleanly(tmp_path):
    """As a user runs it: config, checkpoint and inputs all named in one
    message, no traceback, exit status 1."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'reconstruct.py'),
         'configs/decq/nope.py', 'gone.pth', 'nowhere.png'],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr
    lines = proc.stderr.strip().split('\n')
    assert lines[0].startswith("reconstruct.py: error: config file not "
                               "found: 'configs/decq/nope.py'")
    assert "checkpoint not found: 'gone.pth'" in lines[1]
    assert "input 'nowhere.png' is neither an image file" in lines[2]


@pytest.mark.parametrize('tool, extra', [
    ('compute_latent_stats', ['--out', 'stats.pt']),
    ('reconstruct', []),
])
def test_misspelt_cfg_option_is_one_clear_error(setup, tmp_path, tool,
                                                extra):
    """A typo in a --cfg-options key stops the tool as train.py does: exit
    with one line naming the key (``sys.exit(message)``: no traceback)."""
    root, config, ckpt, _ = setup
    args = [config, ckpt] + ([str(root)] if tool == 'reconstruct' else [])
    with pytest.raises(SystemExit) as exit_info:
        _load_tool(tool).main(args + extra + [
            '--device', 'cpu', '--cfg-options',
            'model.tokenizer.condensr.num_queries=4'])
    message = exit_info.value.code
    assert isinstance(message, str) and '\n' not in message
    assert message.startswith(f'{tool}.py: error: ')
    assert 'model.tokenizer.condensr' in message
