"""Flow-matching velocity loss for patch (and query) latents.

``L = MSE(v_patch) + query_weight * MSE(v_query)``, with one time and the
same noise schedule for both latents of a sample (path conventions in
:mod:`decq_plugin.models.diffusion.flow_path`).
"""
from typing import Callable, Dict, Optional

import torch.nn as nn
from torch import Tensor

from decq_plugin.models.diffusion.flow_path import (TIME_KINDS,
                                                    dimension_shift,
                                                    interpolate, latent_dim,
                                                    randn_like_latents,
                                                    sample_train_time,
                                                    shift_time,
                                                    velocity_target)
from decq_plugin.registry import MODELS

SHIFT_DIMS = ('patch', 'all')


@MODELS.register_module()
class FlowMatchingLoss(nn.Module):
    """Velocity MSE at a random time of the path ``x_t = (1-t) x + t eps``.

    Args:
        time_sampling: 'logit_normal' or 'uniform' (before the shift).
        time_mean: mean of the logit-normal in logit space.
        time_std: std of the logit-normal in logit space.
        t_max: cap of the sampled time before the shift (0.999 as in RAE).
        shift: time-shift factor ``a``; None computes
            ``sqrt(D / base_dim)`` from the latents given.
        shift_dim: which latents make D when ``shift`` is None: 'patch'
            (RAE: D = C*h*w of the patch latent) or 'all' (+ Q*C).
        base_dim: reference dimension of the shift (4096).
        query_weight: lambda_q, weight of the query-latent MSE.

    Returns of ``forward``: ``{'loss': total}`` plus detached
    ``'mse_patch'`` (and ``'mse_query'``) for logging. Only names with
    'loss' in them are summed by MMEngine's ``parse_losses``, so the parts
    are logged without being added twice.
    """

    def __init__(self,
                 time_sampling: str = 'logit_normal',
                 time_mean: float = 0.0,
                 time_std: float = 1.0,
                 t_max: float = 0.999,
                 shift: Optional[float] = None,
                 shift_dim: str = 'patch',
                 base_dim: int = 4096,
                 query_weight: float = 1.0) -> None:
        super().__init__()
        if time_sampling not in TIME_KINDS:
            raise ValueError(f'time_sampling must be one of {TIME_KINDS}, '
                             f'got {time_sampling!r}')
        if time_std <= 0:
            raise ValueError(f'time_std must be positive, got {time_std}')
        if not 0.0 < t_max <= 1.0:
            raise ValueError(f't_max must be in (0, 1], got {t_max}')
        if shift is not None and shift <= 0:
            raise ValueError(f'shift must be positive or None, got {shift}')
        if shift_dim not in SHIFT_DIMS:
            raise ValueError(
                f'shift_dim must be one of {SHIFT_DIMS}, got {shift_dim!r}')
        if base_dim <= 0:
            raise ValueError(f'base_dim must be positive, got {base_dim}')
        if query_weight < 0:
            raise ValueError(
                f'query_weight must be >= 0, got {query_weight}')
        self.time_sampling = time_sampling
        self.time_mean = time_mean
        self.time_std = time_std
        self.t_max = t_max
        self.shift = shift
        self.shift_dim = shift_dim
        self.base_dim = base_dim
        self.query_weight = query_weight

    def time_shift(self, latents: Dict[str, Tensor]) -> float:
        """The shift factor used for these latents."""
        if self.shift is not None:
            return float(self.shift)
        keys = ['patch'] if self.shift_dim == 'patch' else None
        return dimension_shift(latent_dim(latents, keys), self.base_dim)

    def sample_time(self, latents: Dict[str, Tensor]) -> Tensor:
        """Shifted training times [B] on the latents' device."""
        patch = latents['patch']
        t = sample_train_time(
            patch.shape[0], device=patch.device, kind=self.time_sampling,
            mean=self.time_mean, std=self.time_std, t_max=self.t_max)
        return shift_time(t, self.time_shift(latents))

    def forward(self,
                model: Callable[..., Dict[str, Tensor]],
                latents: Dict[str, Tensor],
                y: Tensor,
                t: Optional[Tensor] = None,
                noise: Optional[Dict[str, Tensor]] = None
                ) -> Dict[str, Tensor]:
        """Compute the loss of ``model(x_t, t, y)``.

        Args:
            model: velocity model, ``model(latents, t [B], y [B]) -> dict``.
            latents: clean latents ``{'patch': [B, C, h, w],
                'query': [B, Q, C]}`` ('query' optional).
            y: [B] class labels.
            t: [B] times to use as they are (default: sampled and shifted).
            noise: noise like ``latents`` (default: standard normal).
        """
        if 'patch' not in latents:
            raise KeyError(
                f"latents need a 'patch' entry, got {sorted(latents)}")
        unknown = set(latents) - {'patch', 'query'}
        if unknown:
            raise KeyError(f'unexpected latent keys {sorted(unknown)}')
        if t is None:
            t = self.sample_time(latents)
        if noise is None:
            noise = randn_like_latents(latents)
        x_t = interpolate(latents, noise, t)
        target = velocity_target(latents, noise)
        pred = model(x_t, t, y)

        mse = {k: (pred[k].float() - target[k].float()).pow(2).mean()
               for k in latents}
        total = mse['patch']
        if 'query' in mse:
            total = total + self.query_weight * mse['query']
        out = {'loss': total}
        out.update({f'mse_{k}': v.detach() for k, v in mse.items()})
        return out
