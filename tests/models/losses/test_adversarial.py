"""Hinge losses and the adaptive GAN weight."""
import pytest
import torch

from decq_plugin.models.losses.adversarial import (adaptive_weight,
                                                    generator_hinge_loss,
                                                    hinge_d_loss)


def test_hinge_d_loss_hand_values():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - r): 0, 0.5, 2
    fake = torch.tensor([-3.0, 0.0, 1.0])  # relu(1 + f): 0, 1, 2
    expected = 0.5 * ((0 + 0.5 + 2) / 3 + (0 + 1 + 2) / 3)
    assert hinge_d_loss(real, fake).item() == pytest.approx(expected)
    # A confident, correct discriminator has zero loss.
    assert hinge_d_loss(torch.full((4, 5), 1.5),
                        torch.full((4, 5), -2.0)).item() == 0.0


def test_hinge_d_loss_gradient_only_inside_margin():
    real = torch.tensor([2.0, 0.5], requires_grad=True)
    fake = torch.tensor([-3.0, 0.0], requires_grad=True)
    hinge_d_loss(real, fake).backward()
    # d/dr of 0.5 * mean(relu(1 - r)) is -0.5 / 2 inside the margin.
    assert torch.allclose(real.grad, torch.tensor([0.0, -0.25]))
    assert torch.allclose(fake.grad, torch.tensor([0.0, 0.25]))


def test_generator_hinge_loss():
    fake = torch.tensor([[1.0, -3.0], [2.0, 4.0]])
    assert generator_hinge_loss(fake).item() == pytest.approx(-1.0)


def _tiny_problem():
    """y = W x with W [2, 3]; rec = sum((y - t)^2) / 2, gan = sum(a * y)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2, bias=False)
    x = torch.tensor([1.0, -2.0, 0.5])
    t = torch.tensor([0.3, -0.7])
    a = torch.tensor([0.2, -0.1])
    y = layer(x)
    rec = 0.5 * ((y - t)**2).sum()
    gan = (a * y).sum()
    return layer, x, t, a, rec, gan


def test_adaptive_weight_matches_hand_computation():
    layer, x, t, a, rec, gan = _tiny_problem()
    with torch.no_grad():
        grad_rec = torch.outer(layer.weight @ x - t, x)  # d rec / d W
        grad_gan = torch.outer(a, x)  # d gan / d W
        expected = grad_rec.norm() / (grad_gan.norm() + 1e-6)
    weight = adaptive_weight(rec, gan, layer.weight)
    assert weight.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not weight.requires_grad
    # Graphs were retained: the caller can still back-propagate the sum.
    (rec + weight * gan).backward()
    assert layer.weight.grad is not None


def test_adaptive_weight_clamps_and_eps():
    layer, x, t, a, rec, gan = _tiny_problem()
    small_gan = 1e-3 * gan  # tiny GAN gradient -> big ratio
    unclamped = adaptive_weight(rec, small_gan, layer.weight)
    assert unclamped.item() > 5.0
    assert adaptive_weight(rec, small_gan, layer.weight,
                           max_weight=5.0).item() == 5.0
    # A GAN loss with zero gradient gives ||grad rec|| / eps, then the clamp.
    zero_gan = 0.0 * gan
    with torch.no_grad():
        rec_norm = torch.outer(layer.weight @ x - t, x).norm().item()
    assert adaptive_weight(rec, zero_gan, layer.weight, max_weight=1e12,
                           eps=1e-3).item() == pytest.approx(rec_norm / 1e-3,
                                                             rel=1e-5)
    assert adaptive_weight(rec, zero_gan, layer.weight).item() == 1e4


def test_adaptive_weight_rejects_unrelated_layer():
    layer, x, t, a, rec, gan = _tiny_problem()
    other = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match='rec_loss'):
        adaptive_weight(rec, gan, other)
    with pytest.raises(ValueError, match='max_weight'):
        adaptive_weight(rec, gan, layer.weight, max_weight=-1)
