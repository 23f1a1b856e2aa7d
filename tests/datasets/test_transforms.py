import numpy as np
import pytest
import torch
from PIL import Image

from decq_plugin.datasets.transforms import (AdmCenterCrop, RAETrainCrop,
                                             RandomResizedCropFlip,
                                             ToTensor01, adm_center_crop,
                                             build_transform, pil_to_rgb,
                                             resize_shorter_side, to_tensor01)
from decq_plugin.registry import TRANSFORMS


def _noise_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _x_ramp(w: int, h: int) -> Image.Image:
    """Red channel = x (0..255 across the width), green = y."""
    x = np.linspace(0, 255, w).round().astype(np.uint8)
    y = np.linspace(0, 255, h).round().astype(np.uint8)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = x[None, :]
    arr[..., 1] = y[:, None]
    return Image.fromarray(arr)


def test_to_tensor01_values_and_layout():
    arr = np.zeros((2, 3, 3), np.uint8)
    arr[..., 0] = 255
    arr[1, 2] = (0, 51, 102)
    t = to_tensor01(Image.fromarray(arr))
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    assert t[0, 0, 0] == 1.0 and t[1, 0, 0] == 0.0
    assert torch.allclose(t[:, 1, 2], torch.tensor([0.0, 0.2, 0.4]))


def test_adm_center_crop_without_halving_matches_reference():
    # 512x384 -> min side 384 < 2*256, so no BOX step; bicubic to 341x256,
    # then the centre window starting at x = (341 - 256) // 2 = 42, y = 0.
    img = _noise_image(512, 384)
    out = adm_center_crop(img, 256)
    ref = np.asarray(img.resize((341, 256), Image.BICUBIC))[0:256, 42:298]
    assert out.size == (256, 256)
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_adm_center_crop_with_halving_matches_reference():
    # 1100x600 at 128: BOX halvings to 550x300 then 275x150 (150 < 256
    # stops), bicubic by 128/150 to 235x128, centre x offset (235-128)//2=53.
    img = _noise_image(1100, 600, seed=1)
    out = adm_center_crop(img, 128)
    step = img.resize((550, 300), Image.BOX).resize((275, 150), Image.BOX)
    ref = np.asarray(step.resize((235, 128), Image.BICUBIC))[:, 53:181]
    np.testing.assert_array_equal(np.asarray(out), ref)
    # min side exactly 2 * size still halves (>=), then nothing is left to do.
    square = _noise_image(64, 64, seed=2)
    np.testing.assert_array_equal(
        np.asarray(adm_center_crop(square, 32)),
        np.asarray(square.resize((32, 32), Image.BOX)))


def test_adm_center_crop_keeps_the_centre_region():
    img = _x_ramp(512, 384)
    t = AdmCenterCrop(256)(img)
    assert t.shape == (3, 256, 256)
    # Output column 0 is resized column 42 of 341, i.e. x ~ 42.5/341*512.
    expected_left = (42.5 / 341 * 512) / 511
    expected_right = ((42 + 255.5) / 341 * 512) / 511
    assert abs(t[0, :, 0].mean().item() - expected_left) < 0.01
    assert abs(t[0, :, -1].mean().item() - expected_right) < 0.01
    # Vertically the whole height is kept (y offset 0).
    assert t[1, 0].mean() < 0.01 and t[1, -1].mean() > 0.99


def test_resize_shorter_side():
    assert resize_shorter_side(_noise_image(500, 300), 48).size == (80, 48)
    assert resize_shorter_side(_noise_image(300, 500), 48).size == (48, 80)


def test_rae_train_crop_size_and_reproducibility():
    img = _noise_image(500, 300)
    t = RAETrainCrop()(img)
    assert t.shape == (3, 256, 256)
    small = RAETrainCrop(resize=48, crop=32)
    a = small(img, generator=torch.Generator().manual_seed(3))
    b = small(img, generator=torch.Generator().manual_seed(3))
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    torch.manual_seed(5)
    c = small(img)
    torch.manual_seed(5)
    assert torch.equal(c, small(img))
    crops = {small(img).sum().item() for _ in range(10)}
    assert len(crops) > 1  # the window (or flip) really varies


def test_rae_train_crop_flip():
    # A square image with resize == crop leaves no room for offsets: each
    # draw is the whole image or its mirror, and both must show up.
    img = _noise_image(32, 32)
    plain = to_tensor01(img)
    mirror = plain.flip(-1)
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(24):
        out = RAETrainCrop(resize=32, crop=32)(img, generator=gen)
        assert torch.equal(out, plain) or torch.equal(out, mirror)
        seen.add(torch.equal(out, mirror))
    assert seen == {True, False}
    for _ in range(5):
        out = RAETrainCrop(32, 32, hflip=False)(img, generator=gen)
        assert torch.equal(out, plain)


def test_random_resized_crop_flip_box_is_inside_and_in_ratio():
    t = RandomResizedCropFlip(16, scale=(0.3, 0.6), ratio=(0.5, 2.0))
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        left, top, right, bottom = t.crop_box(90, 60, gen)
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 90 and 0 <= top < bottom <= 60
        assert 0.25 <= w * h / (90 * 60) <= 0.65
        assert 0.45 <= w / h <= 2.2
    out = t(_noise_image(90, 60), generator=gen)
    assert out.shape == (3, 16, 16)


def test_pil_to_rgb_modes():
    gray = Image.fromarray(np.full((4, 4), 77, np.uint8))
    assert np.all(np.asarray(pil_to_rgb(gray)) == 77)
    rgba = Image.fromarray(np.full((4, 4, 4), (10, 20, 30, 0), np.uint8))
    assert np.all(np.asarray(pil_to_rgb(rgba)) == (10, 20, 30))
    cmyk = Image.new('CMYK', (4, 4), (0, 0, 0, 0))
    assert np.all(np.asarray(pil_to_rgb(cmyk)) == 255)
    sixteen = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert sixteen.mode.startswith('I;16')
    mid = Image.fromarray(np.full((4, 4), 257 * 100, np.uint16))
    assert np.all(np.asarray(pil_to_rgb(sixteen)) == 255)
    assert np.all(np.asarray(pil_to_rgb(mid)) == 100)  # PIL alone clips


def test_registry_and_build_transform():
    t = TRANSFORMS.build(dict(type='RAETrainCrop', resize=40, crop=32))
    assert isinstance(t, RAETrainCrop) and t.crop == 32
    assert isinstance(build_transform(dict(type='AdmCenterCrop', size=8),
                                      ToTensor01()), AdmCenterCrop)
    default = ToTensor01()
    assert build_transform(None, default) is default
    with pytest.raises(TypeError, match='transform'):
        build_transform(3, default)


def test_argument_validation_names_the_argument():
    with pytest.raises(ValueError, match='crop'):
        RAETrainCrop(resize=32, crop=64)
    with pytest.raises(ValueError, match='size'):
        AdmCenterCrop(0)
    with pytest.raises(ValueError, match='scale'):
        RandomResizedCropFlip(8, scale=(0.5, 2.0))
