"""What is measured for one tokenizer: reconstruction quality over a data
loader (PSNR, SSIM, rFID, LPIPS), encode and decode throughput on one fixed
batch, parameters and FLOPs.

Images are ``[B, 3, H, W]`` floats in [0, 1]; reconstructions are
``tokenizer.decode(tokenizer.encode(images))``.
"""
import contextlib
import platform
import statistics
import time
from typing import (Callable, Dict, Iterable, List, Optional,
                    Sequence, Tuple)

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from decq_plugin.evaluation.fid import feature_statistics, frechet_distance
from decq_plugin.evaluation.metrics.reconstruction import psnr, ssim
from decq_plugin.utils.flops import tokenizer_costs

_AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
FeatureStats = Tuple[np.ndarray, np.ndarray]


def autocast_context(device: torch.device, autocast: str):
    """``torch.autocast`` for 'bf16'/'fp16', nothing for 'none'."""
    if autocast == 'none':
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[autocast])


def reconstruct(tokenizer: nn.Module, images: torch.Tensor,
                autocast: str = 'none') -> torch.Tensor:
    """images [B,3,H,W] in [0,1] -> float32 reconstructions [B,3,H,W]."""
    with torch.inference_mode(), autocast_context(images.device, autocast):
        return tokenizer.decode(tokenizer.encode(images)).float()


class ReconstructionScorer:
    """Per-image PSNR/SSIM/LPIPS and rFID features, accumulated by batch.

    Args:
        metrics: any of 'psnr', 'ssim', 'rfid', 'lpips'.
        lpips: an ``LPIPSLoss`` (images in [0, 1]; returns the batch mean),
            needed for 'lpips'.
        extractor: images -> (features [N, D] numpy, logits), needed for
            'rfid' (a :class:`LazyFeatureExtractor`).
        reference: (mu, sigma) of the originals' features; None computes
            them from the originals seen (returned by :meth:`compute`).
    """

    def __init__(self,
                 metrics: Sequence[str],
                 lpips: Optional[Callable] = None,
                 extractor: Optional[Callable] = None,
                 reference: Optional[FeatureStats] = None) -> None:
        if 'lpips' in metrics and lpips is None:
            raise ValueError("metric 'lpips' needs an lpips module")
        if 'rfid' in metrics and extractor is None:
            raise ValueError("metric 'rfid' needs a feature extractor")
        self.metrics = tuple(metrics)
        self.lpips = lpips
        self.extractor = extractor
        self.reference = reference
        self.values: Dict[str, List[float]] = {m: [] for m in
                                               ('psnr', 'ssim')}
        self.lpips_sum = 0.0
        self.count = 0
        self.pred_features: List[np.ndarray] = []
        self.gt_features: List[np.ndarray] = []

    @torch.inference_mode()
    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """pred, gt: [B, 3, H, W] in [0, 1], same device."""
        if 'psnr' in self.metrics:
            self.values['psnr'] += psnr(pred, gt).tolist()
        if 'ssim' in self.metrics:
            self.values['ssim'] += ssim(pred, gt).tolist()
        if 'lpips' in self.metrics:
            self.lpips_sum += float(self.lpips(pred, gt)) * pred.shape[0]
        if 'rfid' in self.metrics:
            self.pred_features.append(self.extractor(pred)[0])
            if self.reference is None:
                self.gt_features.append(self.extractor(gt)[0])
        self.count += pred.shape[0]

    def compute(self) -> Tuple[Dict[str, float], Optional[FeatureStats]]:
        """``({metric: value}, reference stats)``; the stats are those
        computed here (None when they were given)."""
        if self.count == 0:
            raise ValueError('no images were scored')
        out: Dict[str, float] = {}
        for name in ('psnr', 'ssim'):
            if name in self.metrics:
                out[name] = float(np.mean(self.values[name]))
        if 'lpips' in self.metrics:
            out['lpips'] = self.lpips_sum / self.count
        computed = None
        if 'rfid' in self.metrics:
            if self.reference is None:
                computed = feature_statistics(np.concatenate(
                    self.gt_features))
            reference = (self.reference if self.reference is not None
                         else computed)
            out['rfid'] = frechet_distance(
                *feature_statistics(np.concatenate(self.pred_features)),
                *reference)
        return out, computed


def evaluate_reconstruction(tokenizer: nn.Module,
                            batches: Iterable[dict],
                            scorer: ReconstructionScorer,
                            device: torch.device,
                            autocast: str = 'none',
                            desc: str = '',
                            progress: bool = True,
                            total: Optional[int] = None
                            ) -> Tuple[Dict[str, float],
                                       Optional[FeatureStats]]:
    """Score ``tokenizer`` on every batch (``batch['inputs']`` [B,3,H,W]).

    Returns:
        ``({'psnr', 'ssim', 'rfid', 'lpips' (those asked for),
        'num_images'}, reference stats computed here or None)``.
    """
    size = tokenizer.image_size
    for batch in tqdm(batches, desc=desc, total=total, leave=False,
                      disable=not progress, unit='batch'):
        images = batch['inputs']
        if images.shape[-2:] != (size, size):
            raise ValueError(
                f'{desc or "tokenizer"}: the dataset gives '
                f'{tuple(images.shape[-2:])} images but the tokenizer '
                f'decodes {size}x{size}; set the dataset transform size to '
                f'{size} (tools/benchmark_tokenizers.py: --image-size '
                f'{size})')
        images = images.to(device, torch.float32)
        scorer.update(reconstruct(tokenizer, images, autocast), images)
    metrics, reference = scorer.compute()
    metrics['num_images'] = scorer.count
    return metrics, reference


def fixed_batch(dataset: Dataset, size: int) -> torch.Tensor:
    """The first ``size`` images of ``dataset`` (cycled when it is shorter)
    as [size, 3, H, W]: the batch every tokenizer is timed on."""
    if len(dataset) == 0:
        raise ValueError('the dataset is empty')
    return torch.stack([dataset[i % len(dataset)]['inputs']
                        for i in range(size)])


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], warmup: int, repeats: int,
               device: torch.device) -> List[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup``
    untimed ones, synchronising the GPU around each."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return (f'{platform.processor() or platform.machine()} CPU, '
            f'{torch.get_num_threads()} threads')


def measure_throughput(tokenizer: nn.Module, images: torch.Tensor,
                       warmup: int, repeats: int,
                       autocast: str = 'none') -> Dict[str, object]:
    """Encode and decode timed separately on ``images`` (already on the
    device): median over ``repeats`` after ``warmup``; images per second."""
    device = images.device
    batch = images.shape[0]
    with torch.inference_mode(), autocast_context(device, autocast):
        latents = tokenizer.encode(images)
        encode = time_calls(lambda: tokenizer.encode(images), warmup,
                            repeats, device)
        decode = time_calls(lambda: tokenizer.decode(latents), warmup,
                            repeats, device)
    enc, dec = statistics.median(encode), statistics.median(decode)
    return dict(encode_images_per_s=batch / enc,
                decode_images_per_s=batch / dec,
                encode_median_s=enc, decode_median_s=dec,
                encode_times_s=encode, decode_times_s=decode,
                batch_size=batch, warmup=warmup, repeats=repeats,
                device=str(device), device_name=device_name(device),
                autocast=autocast)


def cost_summary(tokenizer: nn.Module) -> Dict[str, int]:
    """Per-image parameters and FLOPs (one multiply-add = 2 FLOPs,
    attention counted on any device): :func:`tokenizer_costs` plus
    ``params`` (VFM + condensers + decoder), ``encode_flops`` (VFM +
    condensers) and ``decode_flops``."""
    # not under no_grad: the counter's module tracker needs autograd
    costs = tokenizer_costs(tokenizer)
    costs['params'] = (costs['encoder_params'] + costs['condenser_params'] +
                       costs['decoder_params'])
    costs['encode_flops'] = costs['encoder_flops'] + costs['condenser_flops']
    costs['decode_flops'] = costs['decoder_flops']
    return costs
