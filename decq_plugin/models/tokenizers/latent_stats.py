"""Accumulate per-element latent statistics (for the stats file)."""
from typing import Dict

import torch

Latents = Dict[str, torch.Tensor]


class LatentStatsAccumulator:
    """Running per-element mean and variance of batched latents.

    Sums are kept in float64 so millions of images do not lose precision.
    ``update({'patch': [B,C,h,w], 'query': [B,Q,C]})`` then ``result()``
    gives ``{'patch_mean': [C,h,w], 'patch_var': [C,h,w], ..., 'count'}``.
    """

    def __init__(self) -> None:
        self.count = 0
        self._sum: Dict[str, torch.Tensor] = {}
        self._sq: Dict[str, torch.Tensor] = {}

    def update(self, latents: Latents) -> None:
        sizes = {z.shape[0] for z in latents.values()}
        if len(sizes) != 1:
            raise ValueError(f'latent batch sizes differ: {sizes}')
        for key, z in latents.items():
            z = z.detach().to('cpu', torch.float64)
            if key not in self._sum:
                self._sum[key] = torch.zeros(z.shape[1:], dtype=torch.float64)
                self._sq[key] = torch.zeros(z.shape[1:], dtype=torch.float64)
            self._sum[key] += z.sum(0)
            self._sq[key] += (z * z).sum(0)
        self.count += sizes.pop()

    def merge(self, other: 'LatentStatsAccumulator') -> None:
        """Add another accumulator's sums (e.g. from another rank)."""
        for key in other._sum:
            if key not in self._sum:
                self._sum[key] = other._sum[key].clone()
                self._sq[key] = other._sq[key].clone()
            else:
                self._sum[key] += other._sum[key]
                self._sq[key] += other._sq[key]
        self.count += other.count

    def result(self) -> Dict[str, torch.Tensor]:
        if self.count < 2:
            raise ValueError('need at least two samples for a variance')
        out: Dict[str, torch.Tensor] = {}
        n = self.count
        for key in self._sum:
            mean = self._sum[key] / n
            var = (self._sq[key] / n - mean * mean).clamp_min(0) * n / (n - 1)
            out[f'{key}_mean'] = mean.float()
            out[f'{key}_var'] = var.float()
        out['count'] = torch.tensor(n)
        return out
