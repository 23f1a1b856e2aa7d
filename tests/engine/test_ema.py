"""EMA of trainable parameters only: sharing, values, state dict, EMAHook."""
import copy

import pytest
import torch
import torch.nn as nn
from mmengine.registry import MODELS as MMENGINE_MODELS

from decq_plugin.engine.ema import TrainableExponentialMovingAverage

TRAINABLE = ['head.0.weight', 'head.0.bias', 'head.2.weight', 'head.2.bias']


def _perturb(model, gen):
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype))


def test_frozen_tensors_are_shared_trainable_ones_copied(toy_model):
    ema = TrainableExponentialMovingAverage(toy_model, momentum=0.1)
    src = dict(toy_model.named_parameters())
    own = dict(ema.module.named_parameters())
    for name in ('frozen.weight', 'frozen.bias'):
        assert own[name] is src[name]
    assert ema.module.frozen.scale is toy_model.frozen.scale  # buffer
    for name in TRAINABLE:
        assert own[name].data_ptr() != src[name].data_ptr()
        assert torch.equal(own[name], src[name])
        assert not own[name].requires_grad and src[name].requires_grad
    assert ema.shared_names == {'frozen.weight', 'frozen.bias',
                                'frozen.scale'}
    # The copy's modules are its own (its forward uses its own head).
    assert ema.module.head is not toy_model.head
    x = torch.randn(2, 4)
    assert torch.equal(ema(x, mode='predict')[0]['pred'],
                       toy_model(x, mode='predict')[0]['pred'])


def test_device_argument_copies_only_what_cannot_be_shared(toy_model):
    frozen = toy_model.frozen.weight
    same = TrainableExponentialMovingAverage(toy_model, momentum=0.1,
                                             device='cpu')
    assert same.module.frozen.weight is frozen
    other = TrainableExponentialMovingAverage(toy_model, momentum=0.1,
                                              device='meta')
    assert other.shared_names == set()
    assert other.module.frozen.weight.device.type == 'meta'
    assert other.module.frozen.scale.device.type == 'meta'
    other.update_parameters(toy_model)
    # The source model was not moved.
    assert toy_model.frozen.weight is frozen and frozen.device.type == 'cpu'
    assert toy_model.frozen.scale.device.type == 'cpu'


def test_values_follow_a_hand_computed_ema():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2)).double()
    model[0].requires_grad_(False)
    momentum, gen = 0.3, torch.Generator().manual_seed(1)
    ema = TrainableExponentialMovingAverage(model, momentum=momentum)
    expected = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen_before = model[0].weight.detach().clone()
    for step in range(5):
        _perturb(model, gen)
        ema.update_parameters(model)
        for n, p in model.named_parameters():
            if step == 0 or not p.requires_grad:
                expected[n] = p.detach().clone()
            else:
                expected[n] = (1 - momentum) * expected[n] + momentum * p
    assert int(ema.steps) == 5
    for n, p in ema.module.named_parameters():
        torch.testing.assert_close(p, expected[n], rtol=0, atol=1e-12)
    assert not torch.allclose(ema.module[1].weight, model[1].weight)
    assert torch.equal(model[0].weight, frozen_before)


def test_interval_skips_updates():
    torch.manual_seed(0)
    model = nn.Linear(2, 2).double()
    ema = TrainableExponentialMovingAverage(model, momentum=0.5, interval=2)
    gen = torch.Generator().manual_seed(0)
    values = []
    for _ in range(4):
        _perturb(model, gen)
        values.append(model.weight.detach().clone())
        ema.update_parameters(model)
    # steps 0 (copy) and 2 (average) update; 1 and 3 do not.
    expected = 0.5 * values[0] + 0.5 * values[2]
    torch.testing.assert_close(ema.module.weight, expected, rtol=0,
                               atol=1e-12)


def test_state_dict_holds_only_averaged_entries(toy_model):
    ema = TrainableExponentialMovingAverage(toy_model, momentum=0.1)
    ema.update_parameters(toy_model)
    state = ema.state_dict()
    assert list(state) == ['steps'] + [f'module.{n}' for n in TRAINABLE]

    torch.manual_seed(5)
    other_model = type(toy_model)()
    other = TrainableExponentialMovingAverage(other_model, momentum=0.1)
    result = other.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert int(other.steps) == 1
    for key, value in state.items():
        if key != 'steps':
            assert torch.equal(other.state_dict()[key], value)
    # Frozen entries of a full-model EMA are ignored, not errors.
    full = dict(state, **{'module.frozen.weight': torch.zeros(8, 4)})
    other.load_state_dict(full)
    assert not torch.equal(other_model.frozen.weight, torch.zeros(8, 4))


def test_load_state_dict_errors_change_nothing(toy_model):
    ema = TrainableExponentialMovingAverage(toy_model, momentum=0.1)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    state = {k: v + 1 for k, v in before.items()}
    bad_shape = dict(state, **{'module.head.2.bias': torch.zeros(3)})
    with pytest.raises(RuntimeError, match=r'module.head.2.bias has shape'):
        ema.load_state_dict(bad_shape)
    missing = {k: v for k, v in state.items() if k != 'module.head.0.bias'}
    with pytest.raises(RuntimeError, match='missing keys'):
        ema.load_state_dict(missing)
    extra = dict(state, **{'module.nope': torch.zeros(1)})
    with pytest.raises(RuntimeError, match='module.nope'):
        ema.load_state_dict(extra)
    for k, v in ema.state_dict().items():
        assert torch.equal(v, before[k])
    result = ema.load_state_dict(missing, strict=False)
    assert result.missing_keys == ['module.head.0.bias']
    assert torch.equal(ema.module.head[0].weight,
                       before['module.head.0.weight'] + 1)


@pytest.mark.parametrize('kwargs, match', [
    (dict(momentum=0.0), 'momentum'),
    (dict(momentum=1.0), 'momentum'),
    (dict(momentum=0.1, interval=0), 'interval'),
    (dict(momentum=0.1, update_buffers=True), 'update_buffers'),
])
def test_invalid_arguments(toy_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainableExponentialMovingAverage(toy_model, **kwargs)


def test_model_without_trainable_parameters_is_rejected():
    with pytest.raises(ValueError, match='requires_grad'):
        TrainableExponentialMovingAverage(
            nn.Linear(2, 2).requires_grad_(False), momentum=0.1)


def test_mmengine_models_registry_builds_it_in_scope(decq_scope, toy_model):
    # What EMAHook.before_run does.
    ema = MMENGINE_MODELS.build(
        dict(type='TrainableExponentialMovingAverage', momentum=0.1),
        default_args=dict(model=toy_model))
    assert isinstance(ema, TrainableExponentialMovingAverage)


def _ema_hook(runner):
    return next(h for h in runner.hooks if type(h).__name__ == 'EMAHook')


def test_ema_hook_save_and_resume_round_trip(tmp_path, make_runner):
    full = make_runner(tmp_path / 'full', ema_momentum=0.2)
    full.train()
    hook = _ema_hook(full)
    ema = hook.ema_model
    assert isinstance(ema, TrainableExponentialMovingAverage)
    assert ema.module.frozen.weight is full.model.frozen.weight

    # The checkpoint: EMA weights in 'state_dict', raw ones in
    # 'ema_state_dict', which holds only the averaged entries.
    from decq_plugin.engine.checkpoint import safe_load_checkpoint
    ckpt = safe_load_checkpoint(str(tmp_path / 'full' / 'iter_9.pth'))
    assert list(ckpt['ema_state_dict']) == ['steps'] + [
        f'module.{n}' for n in TRAINABLE]
    src = {k: v.clone() for k, v in full.model.state_dict().items()}
    avg = {k: v.clone() for k, v in ema.state_dict().items()}
    for name in TRAINABLE:
        assert torch.equal(ckpt['state_dict'][name], avg[f'module.{name}'])
        assert torch.equal(ckpt['ema_state_dict'][f'module.{name}'],
                           src[name])
        assert not torch.equal(src[name], avg[f'module.{name}'])
    assert torch.equal(ckpt['state_dict']['frozen.weight'],
                       src['frozen.weight'])

    resumed = make_runner(tmp_path / 'resumed', ema_momentum=0.2,
                          resume=True,
                          load_from=str(tmp_path / 'full' / 'iter_6.pth'))
    resumed.train()
    ema_b = _ema_hook(resumed).ema_model
    for key, value in ema.state_dict().items():
        assert torch.equal(value, ema_b.state_dict()[key]), key
    for key, value in src.items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key

    # Validation swaps trainable weights in and out; frozen stay shared.
    hook.before_val_epoch(full)
    for name in TRAINABLE:
        assert torch.equal(full.model.state_dict()[name],
                           avg[f'module.{name}'])
    hook.after_val_epoch(full)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, src[key]), key
    assert ema.module.frozen.weight is full.model.frozen.weight


def test_ema_hook_load_from_starts_ema_at_the_loaded_weights(
        tmp_path, make_runner):
    make_runner(tmp_path / 'full', max_iters=3, ema_momentum=0.2).train()
    ckpt = str(tmp_path / 'full' / 'iter_3.pth')
    runner = make_runner(tmp_path / 'load', ema_momentum=0.2, load_from=ckpt)
    runner.call_hook('before_run')
    runner.load_or_resume()
    ema = _ema_hook(runner).ema_model
    loaded = copy.deepcopy(runner.model.state_dict())
    for name in TRAINABLE:
        assert torch.equal(ema.state_dict()[f'module.{name}'], loaded[name])
    assert ema.module.frozen.weight is runner.model.frozen.weight


def test_keys_of_wrapped_submodules_match_the_runner_checkpoint():
    """Multi-GPU stage 1 wraps submodules in place
    (MMSeparateDistributedDataParallel): the EMA keys must still be the
    unwrapped names that ``get_state_dict`` writes, or EMAHook's swap of
    ``ema_state_dict`` with ``state_dict`` fails."""
    from mmengine.runner.checkpoint import get_state_dict

    from decq_plugin.engine.ema import TrainableExponentialMovingAverage
    from decq_plugin.registry import MODEL_WRAPPERS

    @MODEL_WRAPPERS.register_module(name='_EmaKeyTestWrapper', force=True)
    class Wrapper(nn.Module):

        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    model = nn.Module()
    model.frozen = nn.Linear(2, 2).requires_grad_(False)
    model.net = Wrapper(nn.Linear(2, 3))
    ema = TrainableExponentialMovingAverage(model, momentum=0.1)
    keys = set(ema.state_dict()) - {'steps'}
    assert keys == {'module.net.weight', 'module.net.bias'}
    assert {k[len('module.'):] for k in keys} <= set(get_state_dict(model))
    ema.load_state_dict(ema.state_dict())  # round trip with the new keys
