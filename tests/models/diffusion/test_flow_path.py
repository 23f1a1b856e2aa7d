"""Tests of the flow-matching path, the time shift and the time grids."""
import math

import pytest
import torch

from decq_plugin.models.diffusion.flow_path import (dimension_shift,
                                                    interpolate, latent_dim,
                                                    map_latents,
                                                    randn_like_latents,
                                                    sample_train_time,
                                                    sampling_grid,
                                                    shift_time,
                                                    velocity_target)


def make_latents(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {'patch': torch.randn(batch, 4, 2, 2, generator=g),
            'query': torch.randn(batch, 5, 4, generator=g)}


def test_interpolation_endpoints_tensor_and_dict():
    x, eps = make_latents(seed=0), make_latents(seed=1)
    for ones in (0.0, 1.0):
        t = torch.full((3,), ones)
        out = interpolate(x, eps, t)
        for k in x:
            assert torch.equal(out[k], eps[k] if ones else x[k])
    out = interpolate(x['patch'], eps['patch'], 0.0)
    assert torch.equal(out, x['patch'])


def test_interpolation_uses_one_time_per_sample():
    x, eps = make_latents(seed=0), make_latents(seed=1)
    t = torch.tensor([0.0, 0.25, 1.0])
    out = interpolate(x, eps, t)
    for k in x:
        torch.testing.assert_close(out[k][1],
                                   0.75 * x[k][1] + 0.25 * eps[k][1])
        assert torch.equal(out[k][2], eps[k][2])


def test_velocity_is_time_derivative_of_path():
    x, eps = make_latents(seed=0), make_latents(seed=1)
    t, h = torch.full((3,), 0.3, dtype=torch.float64), 1e-3
    x = {k: v.double() for k, v in x.items()}
    eps = {k: v.double() for k, v in eps.items()}
    v = velocity_target(x, eps)
    a, b = interpolate(x, eps, t), interpolate(x, eps, t + h)
    for k in x:
        torch.testing.assert_close((b[k] - a[k]) / h, v[k])
        torch.testing.assert_close(v[k], eps[k] - x[k])


def test_map_latents_checks_keys_and_noise_shapes():
    x = make_latents()
    with pytest.raises(ValueError, match='same keys'):
        map_latents(torch.add, x, {'patch': x['patch']})
    noise = randn_like_latents(x, generator=torch.Generator().manual_seed(0))
    assert {k: v.shape for k, v in noise.items()} == \
        {k: v.shape for k, v in x.items()}
    with pytest.raises(ValueError, match='t must be'):
        interpolate(x, noise, torch.rand(2))


def test_dimension_shift_values():
    a = dimension_shift(256 * 768)
    assert a == pytest.approx(math.sqrt(48))
    assert round(a, 2) == 6.93
    assert dimension_shift(4096) == 1.0
    assert dimension_shift(256 * 768 + 8 * 768) == pytest.approx(
        math.sqrt(264 * 768 / 4096))
    x = make_latents()
    assert latent_dim(x, ['patch']) == 16
    assert latent_dim(x) == 36
    with pytest.raises(ValueError, match='latent_dim'):
        dimension_shift(0)


def test_shift_time_formula():
    a = 6.928
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    got = shift_time(t, a)
    want = torch.tensor([0.0, a * 0.25 / (1 + (a - 1) * 0.25), a / (a + 1),
                         1.0])
    torch.testing.assert_close(got, want)
    assert shift_time(0.5, 1.0) == 0.5
    assert (got[1:] > t[1:] - 1e-7).all()  # a > 1 moves times to noise
    with pytest.raises(ValueError, match='shift'):
        shift_time(t, 0.0)


def test_logit_normal_times():
    g = torch.Generator().manual_seed(0)
    t = sample_train_time(20000, generator=g, t_max=0.999)
    assert t.dtype == torch.float32 and t.shape == (20000,)
    assert (t > 0).all() and (t <= 0.999).all()
    assert t.median().item() == pytest.approx(0.5, abs=0.02)
    z = torch.logit(t.double())
    assert z.mean().item() == pytest.approx(0.0, abs=0.03)
    assert z.std().item() == pytest.approx(1.0, abs=0.03)
    shifted = sample_train_time(20000, generator=g, mean=1.0)
    assert torch.logit(shifted.double()).mean().item() == pytest.approx(
        1.0, abs=0.03)


def test_logit_normal_truncation_has_no_mass_at_cap():
    g = torch.Generator().manual_seed(0)
    t = sample_train_time(20000, generator=g, t_max=0.5)
    assert (t <= 0.5).all()
    assert (t == 0.5).float().mean() < 0.001  # truncated, not clamped
    # Truncated at the median: half-normal in logit space.
    z = torch.logit(t.double())
    assert z.mean().item() == pytest.approx(-math.sqrt(2 / math.pi), abs=0.03)


def test_uniform_times_and_reproducibility():
    t = sample_train_time(20000, generator=torch.Generator().manual_seed(1),
                          kind='uniform', t_max=0.8)
    assert (t >= 0).all() and (t < 0.8).all()
    assert t.mean().item() == pytest.approx(0.4, abs=0.01)
    again = sample_train_time(20000, torch.Generator().manual_seed(1),
                              kind='uniform', t_max=0.8)
    assert torch.equal(t, again)
    with pytest.raises(ValueError, match='kind'):
        sample_train_time(4, kind='beta')
    with pytest.raises(ValueError, match='t_max'):
        sample_train_time(4, t_max=1.5)


def test_sampling_grid():
    grid = sampling_grid(50, shift=1.0, t_end=0.0)
    assert grid.shape == (51,) and grid.dtype == torch.float32
    torch.testing.assert_close(grid, torch.linspace(1, 0, 51))
    a = dimension_shift(256 * 768)
    grid = sampling_grid(50, shift=a, t_end=0.001)
    assert grid[0] == 1.0
    assert grid[-1].item() == pytest.approx(shift_time(0.001, a), rel=1e-5)
    assert (grid[1:] < grid[:-1]).all()
    torch.testing.assert_close(grid[25], torch.tensor(
        shift_time(1 - 25 * 0.999 / 50, a), dtype=torch.float32))
    with pytest.raises(ValueError, match='num_steps'):
        sampling_grid(0)
