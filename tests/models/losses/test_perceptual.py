"""LPIPSLoss: values, frozen trunk, eval mode, weight loading, offline error.

Every test uses a random VGG trunk (``pretrained_trunk=False``) or a local
file; the network is never reached (downloads are monkeypatched to fail).
"""
import urllib.error

import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers

from decq_plugin.models.encoders.base import MissingPretrainedWeightsError
from decq_plugin.models.losses.perceptual import LPIPSLoss, _load_trunk_state
from decq_plugin.registry import MODELS


@pytest.fixture(scope='module')
def loss() -> LPIPSLoss:
    torch.manual_seed(0)
    return MODELS.build(dict(type='LPIPSLoss', pretrained_trunk=False))


def _images(seed: int, n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size,
                      generator=torch.Generator().manual_seed(seed))


def test_zero_for_identical_positive_otherwise(loss):
    x, y = _images(0), _images(1)
    same = loss(x, x.clone())
    diff = loss(x, y)
    assert same.dim() == 0 and diff.dim() == 0
    assert same.item() == 0.0
    assert diff.item() > 0.0
    # Symmetric, and a small change is closer than an unrelated image.
    assert loss(y, x).item() == pytest.approx(diff.item(), rel=1e-5)
    assert loss(x, (x + 0.02 * (y - x))).item() < diff.item()


def test_mean_over_batch_of_inputs_in_unit_range(loss):
    x, y = _images(2, n=3), _images(3, n=3)
    value = loss(x, y).item()
    per_image = torch.stack([loss(x[i:i + 1], y[i:i + 1]) for i in range(3)])
    assert value == pytest.approx(per_image.mean().item(), rel=1e-5)
    # [0, 1] inputs are mapped to [-1, 1], as lpips' own normalize flag does.
    with torch.no_grad():
        ref = loss.lpips(x, y, normalize=True).mean().item()
        unmapped = loss.lpips(x, y).mean().item()
    assert value == pytest.approx(ref, rel=1e-5)
    assert value != pytest.approx(unmapped, rel=1e-3)


def test_shipped_linear_heads_loaded(loss):
    import os

    import lpips
    shipped = torch.load(
        os.path.join(os.path.dirname(lpips.__file__), 'weights', 'v0.1',
                     'vgg.pth'), map_location='cpu', weights_only=True)
    for k in range(5):
        own = getattr(loss.lpips, f'lin{k}').model[1].weight
        assert torch.equal(own, shipped[f'lin{k}.model.1.weight'])


def test_frozen_grads_reach_input_only(loss):
    x = _images(4).requires_grad_(True)
    y = _images(5)
    loss(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    params = list(loss.parameters())
    assert params and all(not p.requires_grad for p in params)
    assert all(p.grad is None for p in params)


def test_eval_mode_kept_after_parent_train(loss):
    parent = torch.nn.Module()
    parent.lpips_loss = loss
    parent.train()
    assert parent.training
    assert not any(m.training for m in loss.modules())
    loss.train(True)
    assert not any(m.training for m in loss.modules())


def test_trunk_loaded_from_local_torchvision_file(tmp_path):
    torch.manual_seed(1)
    features = make_layers(cfgs['D'])  # torchvision's VGG16 .features
    state = {f'features.{k}': v for k, v in features.state_dict().items()}
    state['classifier.0.weight'] = torch.zeros(2, 2)  # ignored
    path = tmp_path / 'vgg16-397923af.pth'
    torch.save(state, path)
    loaded = LPIPSLoss(trunk_weights_path=str(path))
    trunk = loaded.lpips.net.state_dict()
    assert torch.equal(trunk['slice1.0.weight'], features[0].weight)
    assert torch.equal(trunk['slice3.14.bias'], features[14].bias)
    assert torch.equal(trunk['slice5.28.weight'], features[28].weight)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_trunk_from_hub_cache_uses_safe_load(monkeypatch):
    calls = {}
    state = {'features.0.weight': torch.zeros(1)}

    def fake_load(url, **kwargs):
        calls.update(url=url, **kwargs)
        return state

    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', fake_load)
    assert _load_trunk_state('vgg', None) is state
    assert calls['url'] == ('https://download.pytorch.org/models/'
                            'vgg16-397923af.pth')
    assert calls['weights_only'] is True
    assert calls['map_location'] == 'cpu'


def test_offline_error_names_the_file(monkeypatch, tmp_path):
    def offline(url, **kwargs):
        raise urllib.error.URLError('no network')

    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', offline)
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path))
    with pytest.raises(MissingPretrainedWeightsError) as info:
        LPIPSLoss(pretrained_trunk=True)
    message = str(info.value)
    assert 'vgg16-397923af.pth' in message
    assert str(tmp_path / 'checkpoints') in message
    assert 'trunk_weights_path' in message
    with pytest.raises(MissingPretrainedWeightsError, match='nowhere.pth'):
        LPIPSLoss(trunk_weights_path=str(tmp_path / 'nowhere.pth'))


def test_baseline_without_linear_heads():
    torch.manual_seed(0)
    base = LPIPSLoss(pretrained_trunk=False, lin_weights=False)
    assert base.lpips.lpips is False and not hasattr(base.lpips, 'lins')
    x, y = _images(6), _images(7)
    assert base(x, x.clone()).item() == 0.0
    assert base(x, y).item() > 0.0


def test_argument_validation():
    with pytest.raises(ValueError, match='net'):
        LPIPSLoss(net='resnet', pretrained_trunk=False)
    with pytest.raises(ValueError, match='trunk_weights_path'):
        LPIPSLoss(pretrained_trunk=False, trunk_weights_path='x.pth')


def test_shape_mismatch_rejected(loss):
    with pytest.raises(ValueError, match='pred and target'):
        loss(_images(0), _images(1, size=16))


def test_alexnet_trunk_matches_lpips_package():
    """The cheaper AlexNet trunk (used by the CPU demo) computes what the
    lpips package computes with the same random trunk and shipped heads."""
    import lpips
    torch.manual_seed(0)
    ours = LPIPSLoss(net='alex', pretrained_trunk=False)
    ref = lpips.LPIPS(net='alex', pretrained=True, pnet_rand=True,
                      verbose=False)
    ref.net.load_state_dict(ours.lpips.net.state_dict())
    a, b = _images(0), _images(1)
    expected = ref(a, b, normalize=True).mean()
    assert torch.allclose(ours(a, b), expected, atol=1e-6)
    assert ours(a, a).item() == 0.0


def test_channels_last_trunk_gives_the_same_distances():
    """The channels-last layout (the default) changes no value."""
    torch.manual_seed(0)
    fast = MODELS.build(dict(type='LPIPSLoss', pretrained_trunk=False))
    torch.manual_seed(0)
    plain = MODELS.build(dict(type='LPIPSLoss', pretrained_trunk=False,
                              channels_last=False))
    conv = fast.lpips.net.slice1[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not plain.lpips.net.slice1[0].weight.is_contiguous(
        memory_format=torch.channels_last)
    a, b = _images(5), _images(6)
    torch.testing.assert_close(fast(a, b), plain(a, b), rtol=1e-5, atol=1e-6)
