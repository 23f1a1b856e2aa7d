"""PSNR, SSIM and rFID, directly and through mmengine's Evaluator."""
import math

import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.registry import init_default_scope
from skimage import data as skdata
from skimage.metrics import structural_similarity

from decq_plugin.evaluation.metrics.reconstruction import (
    PSNRMetric, ReconstructionFIDMetric, SSIMMetric, psnr, quantize_8bit,
    ssim)


def run_metric(metric, preds: torch.Tensor, gts: torch.Tensor,
               batch_size: int = 4) -> dict:
    for start in range(0, len(preds), batch_size):
        samples = [dict(pred=p, gt=g) for p, g in zip(
            preds[start:start + batch_size], gts[start:start + batch_size])]
        metric.process({}, samples)
    return metric.evaluate(len(preds))


def skimage_crops(size: int = 48) -> torch.Tensor:
    """Real photos bundled with scikit-image, cropped: [3, 3, size, size]."""
    crops = [skdata.astronaut()[100:100 + size, 180:180 + size],
             skdata.chelsea()[50:50 + size, 100:100 + size],
             skdata.coffee()[200:200 + size, 250:250 + size]]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2) / 255.


def test_psnr_hand_computation_and_quantisation():
    """RAE's PSNR on ADM/RAE 8-bit images: ``uint8(clip(x, 0, 1) * 255)``
    (truncation), ``20 log10(1 / sqrt(max(mse, 1e-10)))``."""
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 3, 8, 8, generator=gen)
    pred = (gt + 0.05 * torch.randn(2, 3, 8, 8, generator=gen)).clamp(0, 1)

    def hand(a, b, level):
        qa = level(np.clip(a.numpy().astype(np.float32), 0, 1) * 255) / 255
        qb = level(np.clip(b.numpy().astype(np.float32), 0, 1) * 255) / 255
        mse = max(np.mean((qa.astype(np.float64) - qb)**2), 1e-10)
        return 20 * math.log10(1 / math.sqrt(mse))

    def trunc(x):
        return x.astype(np.uint8).astype(np.float64)

    def nearest(x):
        return np.round(x).astype(np.float64)

    for i in range(2):
        assert psnr(pred, gt)[i].item() == pytest.approx(
            hand(pred[i], gt[i], trunc), rel=1e-12)
        assert psnr(pred, gt, 'round')[i].item() == pytest.approx(
            hand(pred[i], gt[i], nearest), rel=1e-12)
    assert psnr(pred, gt)[0] != psnr(pred, gt, 'round')[0]
    # Within one 8-bit level below: identical after truncation -> the MSE
    # clamp (100 dB), never inf.
    q = quantize_8bit(gt)
    assert torch.equal(psnr(q + 1 / 600, q), torch.full((2, ), 100.0,
                                                        dtype=torch.float64))
    # one full level everywhere -> 20 log10(255)
    assert psnr((q + 1.5 / 255).clamp(max=1), q.clamp(max=1 - 1 / 255))[0] \
        == pytest.approx(20 * math.log10(255), rel=1e-9)
    metric = PSNRMetric()
    result = run_metric(metric, pred, gt, batch_size=1)
    assert result['PSNR'] == pytest.approx(psnr(pred, gt).mean().item())
    exact = run_metric(PSNRMetric(), gt, gt)
    assert exact['PSNR'] == 100.0
    rounded = run_metric(PSNRMetric(rounding='round'), pred, gt)
    assert rounded['PSNR'] == pytest.approx(
        psnr(pred, gt, 'round').mean().item())
    with pytest.raises(ValueError, match='rounding'):
        PSNRMetric(rounding='floor')


def test_ssim_matches_skimage():
    gt = skimage_crops()
    gen = torch.Generator().manual_seed(1)
    pred = (gt + 0.08 * torch.randn(gt.shape, generator=gen)).clamp(0, 1)
    ours = ssim(pred, gt)
    for i in range(len(gt)):
        ref = structural_similarity(
            quantize_8bit(pred[i]).permute(1, 2, 0).double().numpy(),
            quantize_8bit(gt[i]).permute(1, 2, 0).double().numpy(),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=1.0, channel_axis=-1)
        assert abs(ours[i].item() - ref) < 1e-6
    assert 0.2 < ours.min() and ours.max() < 0.99
    assert torch.allclose(ssim(gt, gt), torch.ones(3, dtype=torch.float64))
    result = run_metric(SSIMMetric(), pred, gt)
    assert result['SSIM'] == pytest.approx(ours.mean().item())
    with pytest.raises(ValueError, match='window_size'):
        SSIMMetric(window_size=10)


def test_rfid_zero_for_identical_and_grows_with_noise(tiny_extractor_cfg):
    gen = torch.Generator().manual_seed(2)
    gt = torch.rand(24, 3, 32, 32, generator=gen)
    values = []
    for noise in (0.0, 0.1, 0.4):
        pred = (gt + noise * torch.randn(gt.shape, generator=gen)).clamp(0, 1)
        metric = ReconstructionFIDMetric(feature_extractor=tiny_extractor_cfg,
                                         batch_size=5, device='cpu')
        values.append(run_metric(metric, pred, gt, batch_size=7)['rFID'])
    assert abs(values[0]) < 1e-6
    assert values[0] < values[1] < values[2]
    assert values[1] > 1e-4


def test_metrics_through_evaluator(tiny_extractor_cfg):
    init_default_scope('decq_plugin')
    evaluator = Evaluator([
        dict(type='PSNRMetric'),
        dict(type='SSIMMetric'),
        dict(type='ReconstructionFIDMetric',
             feature_extractor=tiny_extractor_cfg, device='cpu'),
    ])
    gt = skimage_crops(32).repeat(2, 1, 1, 1)
    pred = (gt * 0.9 + 0.05).clamp(0, 1)
    for start in (0, 3):
        samples = [dict(pred=p, gt=g, gt_label=1)
                   for p, g in zip(pred[start:start + 3], gt[start:start + 3])]
        evaluator.process(samples, dict(inputs=gt[start:start + 3]))
    result = evaluator.evaluate(6)
    assert set(result) == {'PSNR', 'SSIM', 'rFID'}
    assert result['PSNR'] == pytest.approx(psnr(pred, gt).mean().item())
    assert result['SSIM'] == pytest.approx(ssim(pred, gt).mean().item())
    assert result['rFID'] > 0
    with pytest.raises(KeyError, match="'gt'"):
        PSNRMetric().process({}, [dict(pred=pred[0])])


def test_ssim_window_follows_the_images_device(monkeypatch):
    """The Gaussian window is moved to the images' device (a CPU window on
    CUDA images failed). Every convolution is checked for matching devices
    on the meta device, which plain conv2d does not refuse on the CPU."""
    from decq_plugin.evaluation.metrics import reconstruction
    real_conv2d = reconstruction.F.conv2d
    seen = []

    def checked_conv2d(inputs, weight, *args, **kwargs):
        seen.append((inputs.device, weight.device))
        return real_conv2d(inputs, weight, *args, **kwargs)

    monkeypatch.setattr(reconstruction.F, 'conv2d', checked_conv2d)
    images = torch.rand(2, 3, 16, 16, device='meta')
    out = reconstruction.ssim(images, images)
    assert out.shape == (2, )
    assert seen and all(a == b for a, b in seen)
