"""Reconstruction metrics: PSNR, SSIM (8-bit quantised) and rFID.

Images are quantised to 8 bits as the ADM and RAE samplers write them
(truncation, :func:`decq_plugin.utils.images.to_uint8`; ``rounding='round'``
selects the nearest level). PSNR clamps the MSE at 1e-10 as RAE does, so an
exact reconstruction counts 100 dB instead of making the mean ``inf``.

Each metric reads ``data_samples`` items ``{'pred': Tensor[3, H, W],
'gt': Tensor[3, H, W]}`` (float in [0, 1]) and keeps one result per image,
so mmengine's cross-rank collection drops the sampler's padding correctly.
"""
from typing import Any, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric

from decq_plugin.registry import METRICS
from decq_plugin.utils.images import to_uint8
from ..fid import feature_statistics, frechet_distance
from ..inception import FeatureExtractorSpec, LazyFeatureExtractor


def stack_images(data_samples: Sequence[dict], key: str) -> torch.Tensor:
    """Stack ``item[key]`` ([3, H, W] each) into float [B, 3, H, W] (cpu)."""
    try:
        images = torch.stack([item[key] for item in data_samples])
    except KeyError as err:
        raise KeyError(f"every data sample needs '{key}' (an image "
                       f'[3, H, W] in [0, 1])') from err
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"data_samples['{key}'] must be [3, H, W] images, "
                         f'stacked shape {tuple(images.shape)}')
    return images.detach().float().cpu()


#: RAE's floor on the per-image MSE of PSNR.
MIN_MSE = 1e-10


def quantize_8bit(images: torch.Tensor,
                  rounding: str = 'truncate') -> torch.Tensor:
    """Clamp to [0, 1] and map to the 256 levels of an 8-bit image (as
    float64 in [0, 1]); ``rounding`` as in :func:`to_uint8`."""
    return to_uint8(images, rounding).double() / 255


def psnr(pred: torch.Tensor, gt: torch.Tensor,
         rounding: str = 'truncate') -> torch.Tensor:
    """Per-image PSNR [B] in dB of 8-bit quantised images [B, 3, H, W]
    (peak 1), ``10 log10(1 / max(mse, 1e-10))`` (RAE's clamp: identical
    images give 100 dB)."""
    diff = quantize_8bit(pred, rounding) - quantize_8bit(gt, rounding)
    mse = diff.pow(2).flatten(1).mean(dim=1).clamp_min(MIN_MSE)
    return 10 * torch.log10(1 / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    window = torch.exp(-coords**2 / (2 * sigma**2))
    return window / window.sum()


def ssim(pred: torch.Tensor,
         gt: torch.Tensor,
         window_size: int = 11,
         sigma: float = 1.5,
         rounding: str = 'truncate') -> torch.Tensor:
    """Per-image SSIM [B] of 8-bit quantised images [B, 3, H, W].

    Wang et al. 2004: Gaussian window (``window_size``, ``sigma``), data
    range 1, K1 = 0.01, K2 = 0.03, population (not sample) covariances, the
    SSIM map over 'valid' window positions averaged over pixels and
    channels. Equals ``skimage.metrics.structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1, channel_axis=-1)``.
    """
    if min(pred.shape[-2:]) < window_size:
        raise ValueError(f'images must be at least {window_size} px, got '
                         f'{tuple(pred.shape[-2:])}')
    x = quantize_8bit(pred, rounding).to(pred.device)
    y = quantize_8bit(gt, rounding).to(pred.device)
    channels = x.shape[1]
    window = _gaussian_window(window_size, sigma).to(x.device)
    kernel_h = window.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    kernel_w = window.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t, kernel_h, groups=channels)
        return F.conv2d(t, kernel_w, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov_xy = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2) /
                ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)))
    return ssim_map.flatten(1).mean(dim=1)


@METRICS.register_module()
class PSNRMetric(BaseMetric):
    """PSNR ('PSNR', dB) per image on 8-bit quantised images, averaged over
    images (MSE clamped at 1e-10 as RAE's).

    Args:
        rounding: 8-bit quantisation, 'truncate' (ADM / RAE) or 'round'.
    """
    default_prefix: Optional[str] = None

    def __init__(self,
                 rounding: str = 'truncate',
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        to_uint8(torch.zeros(1), rounding)  # checks the name
        self.rounding = rounding

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        values = psnr(stack_images(data_samples, 'pred'),
                      stack_images(data_samples, 'gt'), self.rounding)
        self.results.extend(values.tolist())

    def compute_metrics(self, results: List[float]) -> dict:
        return dict(PSNR=float(np.mean(results)))


@METRICS.register_module()
class SSIMMetric(BaseMetric):
    """SSIM ('SSIM') per image on 8-bit quantised images, averaged.

    Args:
        window_size: side of the Gaussian window (11).
        sigma: its standard deviation (1.5).
        rounding: 8-bit quantisation, 'truncate' (ADM / RAE) or 'round'.
    """
    default_prefix: Optional[str] = None

    def __init__(self,
                 window_size: int = 11,
                 sigma: float = 1.5,
                 rounding: str = 'truncate',
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if window_size < 1 or window_size % 2 == 0:
            raise ValueError(
                f'window_size must be a positive odd int, got {window_size}')
        if not sigma > 0:
            raise ValueError(f'sigma must be > 0, got {sigma}')
        to_uint8(torch.zeros(1), rounding)  # checks the name
        self.window_size = window_size
        self.sigma = sigma
        self.rounding = rounding

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        values = ssim(stack_images(data_samples, 'pred'),
                      stack_images(data_samples, 'gt'), self.window_size,
                      self.sigma, self.rounding)
        self.results.extend(values.tolist())

    def compute_metrics(self, results: List[float]) -> dict:
        return dict(SSIM=float(np.mean(results)))


@METRICS.register_module()
class ReconstructionFIDMetric(BaseMetric):
    """rFID ('rFID'): FID between the reconstructions and their own
    originals (pred vs gt features of the same run).

    Args:
        feature_extractor: None (FID Inception-v3), a ``MODELS`` config dict
            or a callable images -> (features, logits).
        batch_size: extractor batch size.
        device: where the extractor runs (default: cuda if available).
    """
    default_prefix: Optional[str] = None

    def __init__(self,
                 feature_extractor: FeatureExtractorSpec = None,
                 batch_size: int = 50,
                 device: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.extractor = LazyFeatureExtractor(feature_extractor, batch_size,
                                              device)

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        pred_feats, _ = self.extractor(stack_images(data_samples, 'pred'))
        gt_feats, _ = self.extractor(stack_images(data_samples, 'gt'))
        self.results.extend(
            dict(pred=p, gt=g) for p, g in zip(pred_feats, gt_feats))

    def compute_metrics(self, results: List[dict]) -> dict:
        pred = np.stack([r['pred'] for r in results])
        gt = np.stack([r['gt'] for r in results])
        return dict(rFID=frechet_distance(*feature_statistics(pred),
                                          *feature_statistics(gt)))
