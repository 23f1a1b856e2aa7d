"""Tests of the flow-matching loss."""
import math

import pytest
import torch
from mmengine.model import BaseModel

from decq_plugin.models.diffusion.dit_dh import DiTDH
from decq_plugin.models.diffusion.flow_path import (sample_train_time,
                                                    shift_time)
from decq_plugin.models.losses.flow_matching import FlowMatchingLoss
from decq_plugin.registry import MODELS

TINY = dict(body_width=32, body_depth=1, body_heads=2,
            head_width=32, head_depth=1, head_heads=2)


def make_latents(batch=2, queries=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = {'patch': torch.randn(batch, 8, 4, 4, generator=g)}
    if queries:
        x['query'] = torch.randn(batch, 3, 8, generator=g)
    return x


def doubling_model(x, t, y):
    """A model whose prediction is known in closed form: 2 * x_t."""
    return {k: 2 * v for k, v in x.items()}


def test_loss_equals_hand_computation():
    x, eps = make_latents(seed=0), make_latents(seed=1)
    t = torch.tensor([0.2, 0.7])
    loss = FlowMatchingLoss(query_weight=0.5)
    out = loss(doubling_model, x, torch.zeros(2, dtype=torch.long),
               t=t, noise=eps)
    want = {}
    for k in x:
        tt = t.reshape(-1, *([1] * (x[k].dim() - 1)))
        x_t = (1 - tt) * x[k] + tt * eps[k]
        want[k] = ((2 * x_t - (eps[k] - x[k])) ** 2).mean()
    torch.testing.assert_close(out['mse_patch'], want['patch'])
    torch.testing.assert_close(out['mse_query'], want['query'])
    torch.testing.assert_close(out['loss'],
                               want['patch'] + 0.5 * want['query'])


def test_loss_with_dit_matches_its_prediction_and_backpropagates():
    model = DiTDH(arch=TINY, in_channels=8, grid_size=4, num_queries=3,
                  num_classes=5, class_dropout=0.0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    x, eps = make_latents(seed=0), make_latents(seed=1)
    t, y = torch.tensor([0.3, 0.9]), torch.tensor([1, 4])
    out = FlowMatchingLoss()(model, x, y, t=t, noise=eps)
    x_t = {k: (1 - t.view(-1, *([1] * (v.dim() - 1)))) * v
           + t.view(-1, *([1] * (v.dim() - 1))) * eps[k]
           for k, v in x.items()}
    with torch.no_grad():
        pred = model(x_t, t, y)
    want = sum(((pred[k] - (eps[k] - x[k])) ** 2).mean() for k in x)
    torch.testing.assert_close(out['loss'].detach(), want)
    out['loss'].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert model.patch_out.weight.grad.abs().sum() > 0
    assert model.query_out.weight.grad.abs().sum() > 0
    assert not out['mse_patch'].requires_grad


def test_only_total_is_summed_by_parse_losses():
    out = FlowMatchingLoss()(doubling_model, make_latents(),
                             torch.zeros(2, dtype=torch.long))
    assert set(out) == {'loss', 'mse_patch', 'mse_query'}
    total, log_vars = BaseModel.parse_losses(None, out)
    torch.testing.assert_close(total, out['loss'])
    assert set(log_vars) == {'loss', 'mse_patch', 'mse_query'}


def test_rae_latents_have_no_query_term():
    x = make_latents(queries=False)
    out = FlowMatchingLoss()(doubling_model, x,
                             torch.zeros(2, dtype=torch.long))
    assert set(out) == {'loss', 'mse_patch'}
    torch.testing.assert_close(out['loss'], out['mse_patch'])


class TimeRecorder:
    """A model that remembers the times it was called with."""

    def __init__(self):
        self.t = None

    def __call__(self, x, t, y):
        self.t = t
        return {k: torch.zeros_like(v) for k, v in x.items()}


def test_sampled_times_are_logit_normal_then_dimension_shifted():
    x = make_latents(batch=64)
    recorder = TimeRecorder()
    loss = FlowMatchingLoss()
    torch.manual_seed(3)
    loss(recorder, x, torch.zeros(64, dtype=torch.long))
    torch.manual_seed(3)
    a = math.sqrt(8 * 4 * 4 / 4096)  # patch latent only ('patch' default)
    want = shift_time(sample_train_time(64), a)
    torch.testing.assert_close(recorder.t, want)
    assert loss.time_shift(x) == pytest.approx(a)
    both = FlowMatchingLoss(shift_dim='all').time_shift(x)
    assert both == pytest.approx(math.sqrt((128 + 24) / 4096))
    assert FlowMatchingLoss(shift=2.0).time_shift(x) == 2.0
    full = {'patch': torch.zeros(1, 768, 16, 16)}
    assert round(FlowMatchingLoss().time_shift(full), 2) == 6.93


def test_same_time_for_patch_and_query():
    x = {'patch': torch.ones(4, 8, 4, 4), 'query': torch.ones(4, 3, 8)}
    eps = {k: torch.zeros_like(v) for k, v in x.items()}
    seen = {}

    def model(x_t, t, y):
        seen.update(x_t)
        return {k: torch.zeros_like(v) for k, v in x_t.items()}

    FlowMatchingLoss()(model, x, torch.zeros(4, dtype=torch.long), noise=eps)
    # x_t = 1 - t for both latents, so both reveal the same per-sample t.
    torch.testing.assert_close(seen['patch'][:, 0, 0, 0],
                               seen['query'][:, 0, 0])


def test_registry_and_validation():
    loss = MODELS.build(dict(type='FlowMatchingLoss', query_weight=2.0))
    assert loss.query_weight == 2.0
    with pytest.raises(ValueError, match='time_sampling'):
        FlowMatchingLoss(time_sampling='beta')
    with pytest.raises(ValueError, match='shift_dim'):
        FlowMatchingLoss(shift_dim='query')
    with pytest.raises(ValueError, match='query_weight'):
        FlowMatchingLoss(query_weight=-1.0)
    with pytest.raises(KeyError, match='patch'):
        FlowMatchingLoss()(doubling_model, {'query': torch.ones(2, 3, 8)},
                           torch.zeros(2, dtype=torch.long))
