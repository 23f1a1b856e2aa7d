"""Samplers and guidance on toy problems with an exact velocity field."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from decq_plugin.models.diffusion.flow_path import (dimension_shift,
                                                    shift_time)
from decq_plugin.models.diffusion.samplers import (AutoGuidance,
                                                   ClassifierFreeGuidance,
                                                   EulerSampler, HeunSampler,
                                                   load_frozen_weights)
from decq_plugin.registry import MODELS

NUM_CLASSES = 3
# Per latent type: class means (row = class, last row = null class) and std.
MEANS = {'patch': torch.tensor([1.5, -2.0, 0.5, 0.0], dtype=torch.float64),
         'query': torch.tensor([-1.0, 3.0, 0.0, 0.0], dtype=torch.float64)}
STDS = {'patch': 0.5, 'query': 2.0}


def exact_velocity(x, t, mu, s):
    """E[eps - x0 | x_t = x] for x0 ~ N(mu, s^2), eps ~ N(0, 1) and
    x_t = (1 - t) x0 + t eps (elementwise; t, mu broadcast)."""
    a = 1 - t
    var = a ** 2 * s ** 2 + t ** 2
    return (t - a * s ** 2) / var * (x - a * mu) - mu


class GaussianFlow:
    """Velocity function of a class-conditional Gaussian; counts calls."""

    null_class = NUM_CLASSES

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, y):
        self.calls.append(dict(t=t.clone(), y=y.clone(),
                               batch=x['patch'].shape[0]))
        out = {}
        for key, z in x.items():
            shape = (-1, ) + (1, ) * (z.dim() - 1)
            tt = t.view(shape).to(z.dtype)
            mu = MEANS[key].to(z.dtype)[y].view(shape)
            out[key] = exact_velocity(z, tt, mu, STDS[key])
        return out


def noise(n=4096, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return {'patch': torch.randn(n, 1, 2, 2, generator=g, dtype=dtype),
            'query': torch.randn(n, 3, 1, generator=g, dtype=dtype)}


def labels(n=4096):
    return torch.arange(n) % NUM_CLASSES


def endpoint_error(out, z, y):
    """Largest |x0 - (mu_y + s z)|: the exact flow maps z to mu_y + s z."""
    err = 0.0
    for key in z:
        shape = (-1, ) + (1, ) * (z[key].dim() - 1)
        want = MEANS[key][y].view(shape) + STDS[key] * z[key]
        err = max(err, (out[key] - want).abs().max().item())
    return err


@pytest.mark.parametrize('sampler_cls,max_error', [(EulerSampler, 0.2),
                                                    (HeunSampler, 1e-3)])
def test_maps_noise_to_target_distribution(sampler_cls, max_error):
    z, y = noise(), labels()
    out = sampler_cls(num_points=100, shift=1.0, t_end=0.0)(GaussianFlow(),
                                                            z, y)
    assert set(out) == {'patch', 'query'}
    assert out['patch'].shape == z['patch'].shape
    assert out['query'].shape == z['query'].shape
    for key in z:
        for c in range(NUM_CLASSES):
            samples = out[key][y == c]
            mean, std = MEANS[key][c].item(), STDS[key]
            # 1365 samples per class: the sample mean is within 4 sigma of
            # its expectation, the std within a few percent.
            assert abs(samples.mean().item() - mean) < 4 * std / math.sqrt(
                samples.numel())
            assert abs(samples.std().item() / std - 1) < 0.05
    # Per sample: the exact flow sends z to mu_y + s z (99 steps: Euler's
    # first-order error is ~0.13, Heun's ~4e-4).
    assert endpoint_error(out, z, y) < max_error


def test_heun_is_more_accurate_than_euler_at_few_steps():
    z, y = noise(512), labels(512)
    errors = {}
    for cls in (EulerSampler, HeunSampler):
        errors[cls] = [endpoint_error(cls(num_points=n, shift=1.0, t_end=0.0)(
            GaussianFlow(), z, y), z, y) for n in (5, 9)]
    euler, heun = errors[EulerSampler], errors[HeunSampler]
    assert heun[0] < euler[0] / 3 and heun[1] < euler[1] / 3
    # Orders of convergence: halving the step about halves Euler's error
    # and quarters Heun's.
    assert 1.5 < euler[0] / euler[1] < 2.6
    assert heun[0] / heun[1] > 3.0


def test_shifted_grid_and_times_passed_to_the_model():
    z, y = noise(4), labels(4)
    shift = dimension_shift(4, 4096)  # patch latent: 1 * 2 * 2 elements
    sampler = EulerSampler(num_points=5, t_end=0.0)
    grid = sampler.time_grid(z)
    assert grid.shape == (5, )
    assert grid[0].item() == 1.0 and grid[-1].item() == 0.0
    assert torch.allclose(grid[1], shift_time(torch.tensor(0.75), shift))
    assert (grid[1:] < grid[:-1]).all()
    flow = GaussianFlow()
    sampler(flow, z, y)
    assert len(flow.calls) == 4
    assert torch.allclose(torch.stack([c['t'][0] for c in flow.calls]),
                          grid[:-1].double())
    assert all(torch.equal(c['t'], c['t'][:1].expand(4)) for c in flow.calls)
    assert all(torch.equal(c['y'], y) for c in flow.calls)
    # Heun: two evaluations per step, the second at the next time point.
    flow = GaussianFlow()
    HeunSampler(num_points=5, t_end=0.0)(flow, z, y)
    assert len(flow.calls) == 8
    assert torch.allclose(flow.calls[1]['t'][0], grid[1].double())


def test_shift_resolution_order():
    z = noise(2)
    assert EulerSampler().resolve_shift(z) == pytest.approx(
        math.sqrt(4 / 4096))
    assert EulerSampler(shift_dim='all').resolve_shift(z) == pytest.approx(
        math.sqrt(7 / 4096))
    assert EulerSampler(shift=3.0).resolve_shift(z) == 3.0
    assert EulerSampler(shift=3.0).resolve_shift(z, shift=2.0) == 2.0
    # Full-size RAE latents: a = sqrt(256 * 768 / 4096) = 6.93.
    big = {'patch': torch.empty(1, 768, 16, 16, device='meta')}
    assert EulerSampler().resolve_shift(big) == pytest.approx(6.928, 1e-3)
    grid = EulerSampler(num_points=3, shift=2.0, t_end=0.1).time_grid(z)
    assert grid[-1].item() == pytest.approx(2 * 0.1 / (1 + 0.1))
    assert grid[1].item() == pytest.approx(2 * 0.55 / (1 + 0.55))


def test_default_grid_is_raes():
    """RAE: ``t = 1 - linspace(0, 0.999, 50)`` then ``a t / (1 + (a-1) t)``
    with a = sqrt(16*16*768 / 4096); it ends at t = 0.0069, not 0."""
    big = {'patch': torch.empty(1, 768, 16, 16, device='meta')}
    a = np.sqrt(16 * 16 * 768 / 4096)
    t = 1 - np.linspace(0, 0.999, 50)
    want = a * t / (1 + (a - 1) * t)
    grid = EulerSampler().time_grid(big)
    np.testing.assert_allclose(grid.numpy(), want, rtol=1e-6)
    assert grid[-1].item() == pytest.approx(0.0069, abs=1e-4)
    old = EulerSampler(t_end=0.0).time_grid(big)
    assert old[-1].item() == 0.0 and old[0].item() == 1.0


def test_deterministic_given_the_noise():
    z, y = noise(64, dtype=torch.float32), labels(64)
    sampler = HeunSampler(num_points=6)
    state = torch.get_rng_state()
    a = sampler(GaussianFlow(), z, y)
    b = sampler(GaussianFlow(), {k: v.clone() for k, v in z.items()}, y)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(state, torch.get_rng_state())
    c = sampler(GaussianFlow(), noise(64, seed=1, dtype=torch.float32), y)
    assert not torch.equal(a['patch'], c['patch'])


def test_sampler_argument_checks():
    with pytest.raises(ValueError, match='num_points'):
        EulerSampler(num_points=1)
    with pytest.raises(ValueError, match='shift'):
        EulerSampler(shift=0.0)
    with pytest.raises(ValueError, match='t_end'):
        EulerSampler(t_end=1.0)
    with pytest.raises(ValueError, match='shift_dim'):
        EulerSampler(shift_dim='query')
    with pytest.raises(ValueError, match='y must be'):
        EulerSampler()(GaussianFlow(), noise(4), labels(3))
    sampler = MODELS.build(dict(type='HeunSampler', num_points=7))
    assert isinstance(sampler, HeunSampler) and sampler.num_steps == 6


# --------------------------------------------------------------- guidance
def time(values):
    return torch.tensor(values, dtype=torch.float64)


def test_cfg_scale_one_is_the_conditional_model_exactly():
    z, y = noise(6), labels(6)
    t = time([0.3] * 6)
    flow = GaussianFlow()
    out = ClassifierFreeGuidance(scale=1.0)(flow, z, t, y)
    want = GaussianFlow()(z, t, y)
    assert all(torch.equal(out[k], want[k]) for k in want)
    assert [c['batch'] for c in flow.calls] == [6]  # no unconditional pass


def test_cfg_one_batched_forward_inside_the_interval():
    z, y = noise(6), labels(6)
    t = time([0.3] * 6)
    flow = GaussianFlow()
    cfg = ClassifierFreeGuidance(scale=3.0, interval=(0.2, 0.8))
    out = cfg(flow, z, t, y)
    assert len(flow.calls) == 1 and flow.calls[0]['batch'] == 12
    assert torch.equal(flow.calls[0]['y'],
                       torch.cat([y, torch.full_like(y, NUM_CLASSES)]))
    cond = GaussianFlow()(z, t, y)
    uncond = GaussianFlow()(z, t, torch.full_like(y, NUM_CLASSES))
    for k in z:
        want = uncond[k] + 3.0 * (cond[k] - uncond[k])
        assert torch.allclose(out[k], want, atol=1e-12)
        assert not torch.allclose(out[k], cond[k])


def test_cfg_outside_the_interval_is_conditional():
    z, y = noise(4), labels(4)
    cfg = ClassifierFreeGuidance(scale=4.0, interval=(0.2, 0.5))
    flow = GaussianFlow()
    out = cfg(flow, z, time([0.9] * 4), y)
    cond = GaussianFlow()(z, time([0.9] * 4), y)
    assert all(torch.equal(out[k], cond[k]) for k in z)
    assert [c['batch'] for c in flow.calls] == [4]
    # Per-sample times: guided exactly where t lies in [t_min, t_max].
    t = time([0.1, 0.2, 0.5, 0.6])
    out = cfg(GaussianFlow(), z, t, y)
    cond = GaussianFlow()(z, t, y)
    guided = [not torch.equal(out['patch'][i], cond['patch'][i])
              for i in range(4)]
    assert guided == [False, True, True, False]


def test_cfg_null_class():
    z, y, t = noise(2), labels(2), time([0.5, 0.5])

    def plain(x, tt, yy):
        return GaussianFlow()(x, tt, yy)

    with pytest.raises(ValueError, match='null_class'):
        ClassifierFreeGuidance(scale=2.0)(plain, z, t, y)
    a = ClassifierFreeGuidance(scale=2.0, null_class=NUM_CLASSES)(
        plain, z, t, y)
    b = ClassifierFreeGuidance(scale=2.0)(GaussianFlow(), z, t, y)
    assert torch.equal(a['patch'], b['patch'])
    with pytest.raises(ValueError, match='interval'):
        ClassifierFreeGuidance(interval=(0.8, 0.2))


def test_cfg_moves_samples_towards_the_class():
    """CFG with the exact Gaussian flows: guidance scale > 1 pushes the
    final samples further from the unconditional mean (0) along mu_y."""
    z, y = noise(256), labels(256)
    cfg = ClassifierFreeGuidance(scale=2.0)
    plain = EulerSampler(num_points=30, shift=1.0)(GaussianFlow(), z, y)
    guided = EulerSampler(num_points=30, shift=1.0)(
        cfg.bind(GaussianFlow()), z, y)
    for c in (0, 1):
        mu = MEANS['patch'][c]
        m_plain = plain['patch'][y == c].mean()
        m_guided = guided['patch'][y == c].mean()
        assert (m_guided - m_plain) * mu.sign() > 0.2 * mu.abs()


class Weak(nn.Module):
    """A guide: the Gaussian flow with shrunk class means."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

    def forward(self, x, t, y):
        v = GaussianFlow()(x, t, y)
        return {k: self.gain * w for k, w in v.items()}


def test_autoguidance_with_guide_equal_to_main_is_main():
    z, y, t = noise(5), labels(5), time([0.4] * 5)
    main = GaussianFlow()
    ag = AutoGuidance(scale=2.5, guide=Weak())
    ag.guide.gain.data.fill_(1.0)  # the guide now is the main model
    out = ag(main, z, t, y)
    want = GaussianFlow()(z, t, y)
    assert all(torch.equal(out[k], want[k]) for k in z)


def test_autoguidance_formula_interval_and_freezing():
    z, y, t = noise(5), labels(5), time([0.4] * 5)
    ag = AutoGuidance(scale=2.5, guide=Weak(), interval=(0.0, 0.5))
    assert not ag.guide.gain.requires_grad
    ag.train()
    assert not ag.guide.training
    out = ag(GaussianFlow(), z, t, y)
    main = GaussianFlow()(z, t, y)
    weak = Weak()(z, t, y)
    for k in z:
        want = weak[k] + 2.5 * (main[k] - weak[k])
        assert torch.allclose(out[k], want.detach(), atol=1e-12)
    outside = ag(GaussianFlow(), z, time([0.7] * 5), y)
    main = GaussianFlow()(z, time([0.7] * 5), y)
    assert all(torch.equal(outside[k], main[k]) for k in z)
    with pytest.raises(ValueError, match='guide'):
        AutoGuidance(scale=2.0)


TINY_DIT = dict(type='DiTDH', arch=dict(
    body_width=32, body_depth=1, body_heads=2, head_width=32, head_depth=1,
    head_heads=2), in_channels=4, grid_size=2, num_classes=NUM_CLASSES)


def _randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module


def test_autoguidance_guide_from_config_and_checkpoint(tmp_path):
    """The guide is built from a config and loaded from a checkpoint with
    the EMA layout of MMEngine's EMAHook (state_dict = EMA weights,
    ema_state_dict = raw weights under 'module.')."""
    ema = _randomize(MODELS.build(TINY_DIT), 1)
    raw = _randomize(MODELS.build(TINY_DIT), 2)
    path = str(tmp_path / 'ckpt.pth')
    torch.save({'state_dict': {f'denoiser.{k}': v
                               for k, v in ema.state_dict().items()},
                'ema_state_dict': dict(
                    steps=torch.tensor(3),
                    **{f'module.denoiser.{k}': v
                       for k, v in raw.state_dict().items()})}, path)
    for use_ema, want in ((True, ema), (False, raw)):
        ag = MODELS.build(dict(type='AutoGuidance', scale=1.5,
                               guide=TINY_DIT, guide_ckpt=path,
                               use_ema=use_ema))
        for k, v in want.state_dict().items():
            assert torch.equal(ag.guide.state_dict()[k], v)
        assert all(not p.requires_grad for p in ag.guide.parameters())
    x = {'patch': torch.randn(2, 4, 2, 2)}
    y = torch.tensor([0, 2])
    with torch.no_grad():
        out = ag(_randomize(MODELS.build(TINY_DIT), 3).eval(), x,
                 torch.full((2, ), 0.5), y)
    assert out['patch'].shape == (2, 4, 2, 2)


def test_load_frozen_weights_without_ema_state(tmp_path):
    src = nn.Linear(3, 2)
    path = str(tmp_path / 'plain.pth')
    torch.save({'state_dict': {f'net.{k}': v
                               for k, v in src.state_dict().items()}}, path)
    dst = nn.Linear(3, 2)
    load_frozen_weights(dst, path, prefix='net', use_ema=False)
    assert torch.equal(dst.weight, src.weight)
