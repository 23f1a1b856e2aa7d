"""DiffAug: shape, gradients, translation and colour semantics, seeding."""
import pytest
import torch
import torch.nn.functional as F

from decq_plugin.models.discriminators.diffaug import DiffAug
from decq_plugin.registry import MODELS


def _images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size,
                      generator=torch.Generator().manual_seed(seed))


def _shifted(img: torch.Tensor, dy: int, dx: int, s: int) -> torch.Tensor:
    """Reference: out[i, j] = img[i + dy, j + dx], mid grey outside."""
    h, w = img.shape[-2:]
    padded = F.pad(img, (s, s, s, s), value=0.5)
    return padded[:, s + dy:s + dy + h, s + dx:s + dx + w]


def test_build_defaults_and_shape():
    aug = MODELS.build(dict(type='DiffAug'))
    assert isinstance(aug, DiffAug)
    assert aug.policy == ['color', 'translation']
    assert aug.translation_ratio == 0.125
    x = _images()
    assert aug(x).shape == x.shape


def test_gradient_reaches_input():
    aug = DiffAug()
    x = _images().requires_grad_(True)
    weights = torch.randn(x.shape)
    (aug(x) * weights).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_is_an_integer_shift_within_range():
    aug = DiffAug(policy='translation', translation_ratio=0.125)
    x = _images(n=16, size=16)
    out = aug(x, generator=torch.Generator().manual_seed(3))
    s = 2  # round(0.125 * 16)
    shifts = []
    for img, res in zip(x, out):
        found = [(dy, dx) for dy in range(-s, s + 1)
                 for dx in range(-s, s + 1)
                 if torch.allclose(_shifted(img, dy, dx, s), res)]
        assert len(found) == 1, 'output is not a shift of the input'
        shifts.append(found[0])
    assert any(shift != (0, 0) for shift in shifts)
    assert len(set(shifts)) > 1  # independent per image


def test_translation_moves_a_single_pixel():
    aug = DiffAug(policy='translation', translation_ratio=0.25)
    x = torch.full((8, 3, 8, 8), 0.5)
    x[:, :, 4, 4] = 1.0
    out = aug(x, generator=torch.Generator().manual_seed(0))
    moved = 0
    for res in out:
        pos = (res[0] == 1.0).nonzero()
        assert len(pos) == 1  # 8 * 0.25 = 2 px shift keeps it inside
        dy, dx = 4 - pos[0, 0].item(), 4 - pos[0, 1].item()
        assert abs(dy) <= 2 and abs(dx) <= 2
        moved += (dy, dx) != (0, 0)
    assert moved > 0


def test_color_on_grey_images_is_a_bounded_brightness_shift():
    # For grey images saturation and contrast do nothing, so each output is
    # constant and differs from the input by the brightness draw, which is
    # U(-0.5, 0.5) in [-1, 1] units, i.e. within +-0.25 in [0, 1].
    aug = DiffAug(policy='color')
    x = torch.full((64, 3, 4, 4), 0.4)
    out = aug(x, generator=torch.Generator().manual_seed(0))
    delta = out - x
    per_image = delta.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image),
                          atol=1e-6)
    assert per_image.abs().max() <= 0.25 + 1e-6
    assert per_image[:, 0].std() > 0.05  # independent draws per image
    assert per_image[:, 0].max() > 0.15 and per_image[:, 0].min() < -0.15


def test_color_keeps_pixel_layout():
    # Colour ops are per image affine maps of each pixel (plus channel
    # mixing through the per-pixel mean): no spatial movement, so a
    # constant-colour patch stays constant.
    aug = DiffAug(policy='color')
    x = _images(n=2, size=8)
    x[:, :, :4, :4] = 0.3
    out = aug(x, generator=torch.Generator().manual_seed(1))
    patch = out[:, :, :4, :4].flatten(2)
    assert torch.allclose(patch, patch[..., :1].expand_as(patch), atol=1e-6)
    assert not torch.allclose(out, x)


def test_seeded_generator_is_deterministic():
    aug = DiffAug()
    x = _images()
    a = aug(x, generator=torch.Generator().manual_seed(7))
    b = aug(x, generator=torch.Generator().manual_seed(7))
    c = aug(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_real_and_fake_draws_are_independent():
    aug = DiffAug()
    x = _images()
    gen = torch.Generator().manual_seed(0)
    assert not torch.allclose(aug(x, generator=gen), aug(x, generator=gen))


def test_empty_policy_is_identity_and_validation():
    x = _images()
    assert torch.allclose(DiffAug(policy='')(x), x, atol=1e-6)
    with pytest.raises(ValueError, match='policy'):
        DiffAug(policy='color,cutout')
    with pytest.raises(ValueError, match='translation_ratio'):
        DiffAug(translation_ratio=0.7)
