"""Latent normalisation: the statistics file, the round trip, normalised
latents of the data the statistics came from, and checkpoints that carry
the statistics (tiny tokenizers, offline, CPU)."""

import pytest
import torch

from decq_plugin.models.tokenizers.normalization import (LatentNormalizer,
                                                         LatentStatsError)
from decq_plugin.registry import MODELS

DIM = 32
ENCODER = dict(type='TimmViTEncoder',
               model_name='vit_base_patch14_reg4_dinov2',
               input_size=56, pretrained=False,
               model_kwargs=dict(embed_dim=DIM, depth=4, num_heads=2,
                                 init_values=1.0))
DECODER = dict(type='ViTPixelDecoder', patch_size=8,
               arch=dict(width=32, depth=2, num_heads=2, mlp_dim=64))
SHAPES = {'patch': (DIM, 4, 4), 'query': (3, DIM)}
EPS = 1e-5


def _tokenizer(type_: str = 'DecQTokenizer', seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    cfg = dict(type=type_, encoder=ENCODER, decoder=DECODER, **kwargs)
    if type_ == 'DecQTokenizer':
        cfg['condenser'] = dict(num_queries=3, layers=(0, 2), num_heads=2)
    return MODELS.build(cfg)


def _images(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32,
                      generator=torch.Generator().manual_seed(seed))


def _random_stats(shapes=SHAPES, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    stats = {}
    for key, shape in shapes.items():
        stats[f'{key}_mean'] = torch.randn(shape, generator=gen)
        stats[f'{key}_var'] = torch.rand(shape, generator=gen) * 3 + 0.1
    stats['count'] = torch.tensor(100)
    return stats


def _latents(b: int = 4, seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn((b, ) + s, generator=gen)
            for k, s in SHAPES.items()}


def test_identity_without_stats():
    norm = LatentNormalizer(SHAPES)
    z = _latents()
    assert not bool(norm.enabled)
    for out in (norm.normalize(z), norm.denormalize(z)):
        assert all(torch.equal(out[k], z[k]) for k in z)


def test_normalize_formula_and_round_trip(tmp_path):
    stats = _random_stats()
    path = str(tmp_path / 'stats.pt')
    torch.save(stats, path)
    norm = LatentNormalizer(SHAPES, path, eps=EPS)
    assert bool(norm.enabled)
    z = _latents()
    out = norm.normalize(z)
    for key in SHAPES:
        ref = (z[key] - stats[f'{key}_mean']) / torch.sqrt(
            stats[f'{key}_var'] + EPS)
        assert torch.allclose(out[key], ref, atol=1e-6)
    back = norm.denormalize(out)
    for key in SHAPES:
        assert torch.allclose(back[key], z[key], atol=1e-5)
    # And the other way round.
    again = norm.normalize(norm.denormalize(z))
    assert all(torch.allclose(again[k], z[k], atol=1e-5) for k in z)


def _batch_stats(latents: dict) -> dict:
    stats = {}
    for key, z in latents.items():
        stats[f'{key}_mean'] = z.mean(0)
        stats[f'{key}_var'] = z.var(0, unbiased=False)
    return stats


@pytest.mark.parametrize('type_', ['RAETokenizer', 'DecQTokenizer'])
def test_normalised_latents_have_zero_mean_unit_var(tmp_path, type_):
    images = _images()
    raw = _tokenizer(type_).encode(images)
    path = str(tmp_path / 'stats.pt')
    torch.save(_batch_stats(raw), path)
    tok = _tokenizer(type_, latent_stats=path)  # same seed: same weights
    assert set(tok.latent_shapes) == set(raw)
    assert all(torch.equal(tok.encode(images, normalize=False)[k], raw[k])
               for k in raw)
    latents = tok.encode(images)
    for key, z in latents.items():
        assert torch.allclose(z.mean(0), torch.zeros_like(z[0]), atol=1e-4)
        var = z.var(0, unbiased=False)
        # var / (var + eps): within 1e-2 of one for these latents.
        assert torch.allclose(var, torch.ones_like(var), atol=1e-2), key
        assert not torch.allclose(raw[key].var(0, unbiased=False),
                                  torch.ones_like(var), atol=1e-1)
    # decode() undoes the normalisation: same pixels as the raw path.
    assert torch.allclose(tok.decode(latents), tok.reconstruct(images),
                          atol=1e-5)


def test_missing_stats_file_names_the_tool(tmp_path):
    path = str(tmp_path / 'no_stats.pt')
    with pytest.raises(LatentStatsError) as info:
        _tokenizer('RAETokenizer', latent_stats=path)
    assert 'tools/compute_latent_stats.py' in str(info.value)
    assert path in str(info.value)
    assert isinstance(info.value, ValueError)


def test_wrong_shape_stats_file(tmp_path):
    stats = _random_stats({'patch': (DIM, 8, 8), 'query': (3, DIM)})
    path = str(tmp_path / 'stats.pt')
    torch.save(stats, path)
    with pytest.raises(LatentStatsError, match=r'patch_mean.*\(32, 8, 8\)'):
        _tokenizer('DecQTokenizer', latent_stats=path)


def test_stats_file_without_query_stats(tmp_path):
    path = str(tmp_path / 'rae_stats.pt')
    torch.save(_random_stats({'patch': SHAPES['patch']}), path)
    with pytest.raises(LatentStatsError, match='query_mean'):
        _tokenizer('DecQTokenizer', latent_stats=path)
    # An RAE tokenizer takes the same file.
    tok = _tokenizer('RAETokenizer', latent_stats=path)
    assert bool(tok.normalizer.enabled)


def test_stats_file_is_not_unpickled(tmp_path):
    """Loaded with weights_only=True: a file needing arbitrary classes is
    refused rather than run."""

    path = str(tmp_path / 'evil.pt')
    stats = _random_stats()
    stats['extra'] = _Payload()
    torch.save(stats, path)
    with pytest.raises(LatentStatsError) as err:
        LatentNormalizer(SHAPES, path)
    # The message names the file and the config key, and never suggests
    # weights_only=False.
    assert path in str(err.value) and 'latent_stats' in str(err.value)
    assert 'weights_only=False' not in str(err.value)
    not_a_dict = str(tmp_path / 'list.pt')
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(LatentStatsError, match='holds a list'):
        LatentNormalizer(SHAPES, not_a_dict)


class _Payload:
    """Any class outside the weights-only allow-list."""


def test_checkpoint_carries_the_stats(tmp_path):
    stats = _random_stats()
    path = str(tmp_path / 'stats.pt')
    torch.save(stats, path)
    tok = _tokenizer('DecQTokenizer', latent_stats=path)
    state = tok.state_dict()
    for key in ('patch_mean', 'patch_var', 'query_mean', 'query_var'):
        assert torch.equal(state[f'normalizer.{key}'], stats[key])
    assert bool(state['normalizer.enabled'])
    ckpt = str(tmp_path / 'tok.pth')
    torch.save(state, ckpt)
    fresh = _tokenizer('DecQTokenizer', seed=3)  # no stats file
    assert not bool(fresh.normalizer.enabled)
    fresh.load_state_dict(torch.load(ckpt, weights_only=True))
    images = _images(2)
    a, b = tok.encode(images), fresh.encode(images)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.allclose(a['patch'], tok.encode(images,
                                                     normalize=False)['patch'])


@pytest.mark.parametrize('batch_dim', [False, True])
def test_rae_stats_file_loads_as_patch_stats(tmp_path, batch_dim):
    """RAE's ``calculate_stat.py`` writes ``{'mean', 'var'}`` [C, h, w]:
    they normalise the patch latents, ``(z - mean) / sqrt(var + 1e-5)``."""
    shapes = {'patch': SHAPES['patch']}
    gen = torch.Generator().manual_seed(3)
    mean = torch.randn(SHAPES['patch'], generator=gen)
    var = torch.rand(SHAPES['patch'], generator=gen) + 0.5
    path = str(tmp_path / 'stat.pt')
    torch.save({'mean': mean[None] if batch_dim else mean,
                'var': var[None] if batch_dim else var}, path)
    norm = LatentNormalizer(shapes, path, eps=EPS)
    z = _latents()['patch']
    torch.testing.assert_close(norm.normalize({'patch': z})['patch'],
                               (z - mean) / torch.sqrt(var + EPS))
    # A DecQ tokenizer also needs query statistics, which RAE's file lacks.
    with pytest.raises(LatentStatsError, match='query_mean'):
        LatentNormalizer(SHAPES, path)
