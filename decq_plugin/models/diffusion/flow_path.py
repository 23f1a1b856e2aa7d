"""The flow-matching path, its time shift and time grids (one convention).

t = 0 is data, t = 1 is noise::

    x_t = (1 - t) * x + t * eps,      velocity v = eps - x

The dimension-dependent shift ``t' = a t / (1 + (a - 1) t)`` with
``a = sqrt(D / base_dim)`` moves times towards noise for large latents
(D = 256 * 768 gives a = 6.93).

"Latents" are a tensor or a dict of tensors with a shared batch dimension
(``{'patch': [B, C, h, w], 'query': [B, Q, C]}``); path functions map over
dict values with one time per sample.
"""
import math
from typing import Callable, Dict, Iterable, Optional, Union

import torch
from torch import Tensor

Latents = Union[Tensor, Dict[str, Tensor]]
TimeLike = Union[Tensor, float]

TIME_KINDS = ('logit_normal', 'uniform')


def map_latents(fn: Callable[..., Tensor], *latents: Latents) -> Latents:
    """Apply ``fn`` to tensors, or key by key to dicts with equal keys."""
    first = latents[0]
    if not isinstance(first, dict):
        return fn(*latents)
    for other in latents[1:]:
        if not isinstance(other, dict) or set(other) != set(first):
            raise ValueError('latent dicts must have the same keys, got '
                             f'{sorted(first)} and {sorted(other)}')
    return {k: fn(*(lat[k] for lat in latents)) for k in first}


def expand_time(t: TimeLike, x: Tensor) -> TimeLike:
    """Reshape per-sample times [B] to broadcast against ``x`` [B, ...]."""
    if not isinstance(t, Tensor) or t.dim() == 0:
        return t
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f't must be a scalar or [B={x.shape[0]}], got '
                         f'{tuple(t.shape)}')
    return t.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def interpolate(x: Latents, eps: Latents, t: TimeLike) -> Latents:
    """``x_t = (1 - t) x + t eps`` (t [B] or scalar)."""
    def fn(a: Tensor, e: Tensor) -> Tensor:
        tt = expand_time(t, a)
        return (1 - tt) * a + tt * e

    return map_latents(fn, x, eps)


def velocity_target(x: Latents, eps: Latents) -> Latents:
    """Target velocity ``eps - x`` (d x_t / d t)."""
    return map_latents(lambda a, e: e - a, x, eps)


def randn_like_latents(x: Latents,
                       generator: Optional[torch.Generator] = None) -> Latents:
    """Standard normal noise shaped like the latents."""
    return map_latents(
        lambda a: torch.randn(a.shape, generator=generator, device=a.device,
                              dtype=a.dtype), x)


def latent_dim(x: Latents, keys: Optional[Iterable[str]] = None) -> int:
    """Elements per sample (summed over ``keys`` of a dict; all by default)."""
    if not isinstance(x, dict):
        return x[0].numel()
    keys = list(x) if keys is None else list(keys)
    missing = [k for k in keys if k not in x]
    if missing:
        raise KeyError(f'latents have no {missing}; keys are {sorted(x)}')
    return sum(x[k][0].numel() for k in keys)


def shift_time(t: TimeLike, shift: float) -> TimeLike:
    """``t' = a t / (1 + (a - 1) t)``; maps [0, 1] onto itself."""
    if shift <= 0:
        raise ValueError(f'shift must be positive, got {shift}')
    return shift * t / (1 + (shift - 1) * t)


def dimension_shift(latent_dim: int, base_dim: int = 4096) -> float:
    """Shift factor ``a = sqrt(latent_dim / base_dim)``."""
    if latent_dim <= 0 or base_dim <= 0:
        raise ValueError('latent_dim and base_dim must be positive, got '
                         f'{latent_dim} and {base_dim}')
    return math.sqrt(latent_dim / base_dim)


def sample_train_time(batch: int,
                      generator: Optional[torch.Generator] = None,
                      device: Optional[Union[str, torch.device]] = None,
                      kind: str = 'logit_normal',
                      mean: float = 0.0,
                      std: float = 1.0,
                      t_max: float = 0.999) -> Tensor:
    """Training times [batch] float32 in [0, t_max] (before any shift).

    ``'logit_normal'``: ``sigmoid(N(mean, std^2))`` truncated to
    ``t <= t_max`` (inverse-CDF sampling, no mass piled up at t_max).
    ``'uniform'``: U(0, t_max).
    """
    if kind not in TIME_KINDS:
        raise ValueError(f'kind must be one of {TIME_KINDS}, got {kind!r}')
    if batch <= 0:
        raise ValueError(f'batch must be positive, got {batch}')
    if not 0.0 < t_max <= 1.0:
        raise ValueError(f't_max must be in (0, 1], got {t_max}')
    if std <= 0:
        raise ValueError(f'std must be positive, got {std}')
    if device is None and generator is not None:
        device = generator.device
    u = torch.rand(batch, generator=generator, device=device,
                   dtype=torch.float64)
    if kind == 'uniform':
        return (u * t_max).float()
    if t_max < 1.0:
        z_max = (math.log(t_max / (1 - t_max)) - mean) / std
        u = u * (0.5 * (1 + math.erf(z_max / math.sqrt(2))))
    t = torch.sigmoid(mean + std * torch.special.ndtri(u))
    return t.clamp(max=t_max).float()


def sampling_grid(num_steps: int = 50, shift: float = 1.0,
                  t_end: float = 0.001) -> Tensor:
    """Shifted time points [num_steps + 1] float32, from 1 down to
    ``shift_time(t_end, shift)``, evenly spaced before the shift.

    RAE's grid: ``shift(1 - linspace(0, 1 - t_end, num_steps + 1))`` with
    ``t_end = 0.001`` (its last point is 0.0069 for a = 6.93); ``t_end = 0``
    ends at clean data."""
    if num_steps <= 0:
        raise ValueError(f'num_steps must be positive, got {num_steps}')
    if not 0.0 <= t_end < 1.0:
        raise ValueError(f't_end must be in [0, 1), got {t_end}')
    t = 1.0 - torch.linspace(0.0, 1.0 - t_end, num_steps + 1,
                             dtype=torch.float64)
    return shift_time(t, shift).float()
