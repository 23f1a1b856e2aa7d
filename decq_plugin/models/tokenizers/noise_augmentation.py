"""Noise augmentation of latents for decoder training."""
from typing import Dict, Optional

import torch

Latents = Dict[str, torch.Tensor]


def noise_augment(latents: Latents,
                  tau: float,
                  generator: Optional[torch.Generator] = None) -> Latents:
    """``z + sigma * eps`` with ``sigma = tau * U(0, 1)`` drawn once per
    sample and shared by every latent type of that sample (patch and
    query). ``tau = 0`` returns the latents unchanged."""
    if tau < 0:
        raise ValueError(f'tau={tau} must be >= 0')
    if tau == 0:
        return dict(latents)
    any_z = next(iter(latents.values()))
    sigma = tau * torch.rand(
        any_z.shape[0], generator=generator, device=any_z.device,
        dtype=any_z.dtype)
    out = {}
    for key, z in latents.items():
        noise = torch.randn(
            z.shape, generator=generator, device=z.device, dtype=z.dtype)
        out[key] = z + sigma.view(-1, *([1] * (z.dim() - 1))) * noise
    return out
