"""ODE samplers (Euler, Heun) and guidance for flow-matching denoisers.

Conventions (:mod:`.flow_path`): t = 1 is noise, t = 0 data; the model
predicts ``v = eps - x`` = d x_t / d t, so sampling integrates
``dx = v dt`` from t = 1 down to ``t_end`` on the shifted grid
``sampling_grid(num_points - 1, shift, t_end)``.

A *velocity function* is ``fn(x, t, y) -> v`` with ``x`` a latents dict
(``{'patch': [B, C, h, w], 'query': [B, Q, C]}``; every entry is
integrated jointly), ``t`` [B] and ``y`` [B] long labels; it returns a dict
with the keys and shapes of ``x``. A denoiser (``DiTDH``) is one.

Guidance objects turn a denoiser into a guided velocity function and
compose by plain wrapping::

    cfg = ClassifierFreeGuidance(scale=1.5, interval=(0.0, 0.7))
    latents = EulerSampler()(cfg.bind(dit), noise, labels)

    ag = AutoGuidance(scale=1.42, guide=small_dit)
    latents = EulerSampler()(ag.bind(dit), noise, labels)

Guidance is applied for samples whose time lies in ``interval``
(``t_min <= t <= t_max``, on the model's time axis, i.e. after the shift);
elsewhere the plain conditional velocity is used.
"""
import logging
from functools import partial
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from torch import Tensor

from decq_plugin.registry import MODELS
from .flow_path import dimension_shift, latent_dim, sampling_grid

Latents = Dict[str, Tensor]
VelocityFn = Callable[[Latents, Tensor, Tensor], Latents]

SHIFT_DIMS = ('patch', 'all')


# ---------------------------------------------------------------------------
# Frozen auxiliary models (tokenizers, autoguidance guides).
# ---------------------------------------------------------------------------
def freeze(module: nn.Module) -> nn.Module:
    """No gradients and eval mode for ``module``; it is also marked as
    initialised, so MMEngine's ``init_weights`` (run by the Runner) does not
    overwrite its (loaded) weights."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.is_init = True  # what BaseModule.init_weights checks
    return module.eval()


def load_frozen_weights(module: nn.Module, path: str, prefix: str = '',
                        use_ema: bool = True) -> None:
    """Load ``module`` from a training checkpoint, EMA or raw weights.

    With MMEngine's ``EMAHook`` the checkpoint's ``'state_dict'`` holds the
    *averaged* weights and ``'ema_state_dict'`` the raw ones (under
    ``'module.<name>'``; with ``TrainableExponentialMovingAverage`` only the
    trainable ones). ``use_ema=True`` loads ``'state_dict'`` as it is;
    ``use_ema=False`` then overlays the raw entries of ``'ema_state_dict'``.

    Args:
        module: receives the weights (keys relative to ``prefix``).
        path: checkpoint file, read with ``torch.load(weights_only=True)``.
        prefix: key prefix of the module in the checkpoint, e.g.
            ``'tokenizer'`` (stage-1 ``AutoencoderModel``) or ``'denoiser'``
            (a ``LatentDiffusionModel``); ``''`` for a bare state dict.
        use_ema: see above.
    """
    from decq_plugin.engine.checkpoint import (load_model_weights,
                                               safe_load_checkpoint)
    load_model_weights(module, path, prefix=prefix)
    if use_ema:
        return
    checkpoint = safe_load_checkpoint(path)
    if 'ema_state_dict' not in checkpoint:
        print_log(f'{path!r} has no ema_state_dict: its state_dict holds the '
                  'raw weights, loaded as they are (use_ema=False)',
                  logger='current', level=logging.WARNING)
        return
    raw_prefix = 'module.' + prefix.rstrip('.') if prefix else 'module'
    if not any(k.startswith(raw_prefix + '.')
               for k in checkpoint['ema_state_dict']):
        return  # nothing of this module was averaged
    load_model_weights(module, path, key='ema_state_dict', prefix=raw_prefix,
                       strict=False)


# ---------------------------------------------------------------------------
# Guidance.
# ---------------------------------------------------------------------------
def _check_interval(interval: Sequence[float]) -> Tuple[float, float]:
    if len(interval) != 2:
        raise ValueError(f'interval must be (t_min, t_max), got {interval}')
    lo, hi = float(interval[0]), float(interval[1])
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(
            f'interval must satisfy 0 <= t_min <= t_max <= 1, got {interval}')
    return lo, hi


def _guided(main: Latents, weak: Latents, scale: float,
            inside: Tensor) -> Latents:
    """``weak + s (main - weak)`` where ``inside`` [B], else ``main``.

    Written as ``main + (s - 1)(main - weak)``: exactly ``main`` at s = 1.
    Computed in float32 at least (the velocities may come out of a bf16 network)."""
    out = {}
    for key, m in main.items():
        dtype = torch.promote_types(m.dtype, torch.float32)
        m = m.to(dtype)
        g = m + (scale - 1.0) * (m - weak[key].to(dtype))
        mask = inside.view(-1, *([1] * (m.dim() - 1)))
        out[key] = torch.where(mask, g, m)
    return out


class Guidance(nn.Module):
    """Base class: ``guidance(model, x, t, y) -> v`` (latent dicts).

    Args:
        scale: guidance scale s (1 disables guidance).
        interval: (t_min, t_max); guided only for t in this closed range.
    """

    def __init__(self, scale: float = 1.0,
                 interval: Sequence[float] = (0.0, 1.0)) -> None:
        super().__init__()
        if scale < 0:
            raise ValueError(f'scale must be >= 0, got {scale}')
        self.scale = float(scale)
        self.interval = _check_interval(interval)

    def inside(self, t: Tensor, batch: int) -> Tensor:
        """Bool [B]: which samples are guided at times ``t`` ([B] or [])."""
        t = t.expand(batch) if t.dim() == 0 else t
        return (t >= self.interval[0]) & (t <= self.interval[1])

    def bind(self, model: VelocityFn) -> VelocityFn:
        """The guided velocity function ``fn(x, t, y)`` of ``model``."""
        return partial(self.__call__, model)

    def extra_repr(self) -> str:
        return f'scale={self.scale}, interval={self.interval}'


@MODELS.register_module()
class ClassifierFreeGuidance(Guidance):
    """``v = v_uncond + s (v_cond - v_uncond)`` inside the interval.

    Conditional and unconditional velocities come from one forward of the
    batch ``[x; x]`` with labels ``[y; null]``. Outside the interval (or at
    s = 1) only the conditional half is run.

    Args:
        scale: s.
        interval: (t_min, t_max).
        null_class: the unconditional label; default ``model.null_class``.
    """

    def __init__(self, scale: float = 1.0,
                 interval: Sequence[float] = (0.0, 1.0),
                 null_class: Optional[int] = None) -> None:
        super().__init__(scale, interval)
        self.null_class = null_class

    def _null(self, model: VelocityFn) -> int:
        null = self.null_class
        if null is None:
            null = getattr(model, 'null_class', None)
        if null is None:
            raise ValueError('ClassifierFreeGuidance needs null_class: pass '
                             'it or use a model with a .null_class attribute')
        return int(null)

    def forward(self, model: VelocityFn, x: Latents, t: Tensor,
                y: Tensor) -> Latents:
        batch = y.shape[0]
        inside = self.inside(t, batch)
        if self.scale == 1.0 or not bool(inside.any()):
            return model(x, t, y)
        t = t.expand(batch) if t.dim() == 0 else t
        both = model({k: torch.cat([v, v]) for k, v in x.items()},
                     torch.cat([t, t]),
                     torch.cat([y, torch.full_like(y, self._null(model))]))
        cond = {k: v[:batch] for k, v in both.items()}
        uncond = {k: v[batch:] for k, v in both.items()}
        return _guided(cond, uncond, self.scale, inside)


@MODELS.register_module()
class AutoGuidance(Guidance):
    """``v = v_weak + s (v_main - v_weak)`` with a weaker guide denoiser.

    The guide (e.g. a DiT-DH-S, or an early checkpoint) is frozen. It is
    built from ``guide`` (a config or a module) and loaded from
    ``guide_ckpt`` (see :func:`load_frozen_weights`). Both models get the
    same class labels.

    Args:
        scale: s (RAE: 1.42 at 256 px with a DiT-DH-S guide).
        guide: config or module of the weak denoiser.
        interval: (t_min, t_max).
        guide_ckpt: checkpoint file of the guide, or None.
        guide_prefix: key prefix of the guide in that checkpoint
            (``'denoiser'`` for a ``LatentDiffusionModel`` checkpoint).
        use_ema: load the EMA (True) or raw weights of the guide.
    """

    def __init__(self, scale: float = 1.0,
                 guide: Union[dict, nn.Module, None] = None,
                 interval: Sequence[float] = (0.0, 1.0),
                 guide_ckpt: Optional[str] = None,
                 guide_prefix: str = 'denoiser',
                 use_ema: bool = True) -> None:
        super().__init__(scale, interval)
        if guide is None:
            raise ValueError('AutoGuidance needs guide= (a denoiser config or '
                             'module)')
        self.guide = guide if isinstance(guide, nn.Module) else MODELS.build(
            guide)
        if guide_ckpt is not None:
            load_frozen_weights(self.guide, guide_ckpt, guide_prefix,
                                use_ema)
        freeze(self.guide)

    def train(self, mode: bool = True) -> 'AutoGuidance':
        # The guide is frozen: it never leaves eval mode.
        super().train(mode)
        self.guide.eval()
        return self

    def forward(self, model: VelocityFn, x: Latents, t: Tensor,
                y: Tensor) -> Latents:
        batch = y.shape[0]
        inside = self.inside(t, batch)
        main = model(x, t, y)
        if self.scale == 1.0 or not bool(inside.any()):
            return main
        return _guided(main, self.guide(x, t, y), self.scale, inside)


# ---------------------------------------------------------------------------
# Samplers.
# ---------------------------------------------------------------------------
class ODESampler:
    """Integrates ``dx/dt = v(x, t, y)`` from t = 1 to ``t_end``.

    Args:
        num_points: time points of the grid (steps = ``num_points - 1``;
            RAE: 50).
        shift: time-shift factor a; None computes ``sqrt(D / base_dim)``
            from the noise like training does (see ``shift_dim``), unless a
            shift is passed to ``__call__``.
        t_end: last time before the shift. RAE's grid (default): 0.001,
            i.e. ``shift(1 - linspace(0, 0.999, num_points))``, ending at
            t = 0.0069 for a = 6.93; 0 ends at clean data.
        shift_dim: 'patch' (D = C*h*w, as ``FlowMatchingLoss``'s default) or
            'all' (+ Q*C).
        base_dim: reference dimension of the shift.
    """

    #: velocity evaluations per step (for bookkeeping).
    evals_per_step = 1

    def __init__(self, num_points: int = 50, shift: Optional[float] = None,
                 t_end: float = 0.001, shift_dim: str = 'patch',
                 base_dim: int = 4096) -> None:
        if not isinstance(num_points, int) or num_points < 2:
            raise ValueError(
                f'num_points must be an int >= 2, got {num_points!r}')
        if shift is not None and shift <= 0:
            raise ValueError(f'shift must be positive or None, got {shift}')
        if not 0.0 <= t_end < 1.0:
            raise ValueError(f't_end must be in [0, 1), got {t_end}')
        if shift_dim not in SHIFT_DIMS:
            raise ValueError(
                f'shift_dim must be one of {SHIFT_DIMS}, got {shift_dim!r}')
        if base_dim <= 0:
            raise ValueError(f'base_dim must be positive, got {base_dim}')
        self.num_points = num_points
        self.shift = None if shift is None else float(shift)
        self.t_end = float(t_end)
        self.shift_dim = shift_dim
        self.base_dim = base_dim

    @property
    def num_steps(self) -> int:
        return self.num_points - 1

    def resolve_shift(self, latents: Latents,
                      shift: Optional[float] = None) -> float:
        """``shift`` if given, else the configured one, else from D."""
        if shift is not None:
            return float(shift)
        if self.shift is not None:
            return self.shift
        keys = ['patch'] if self.shift_dim == 'patch' else None
        return dimension_shift(latent_dim(latents, keys), self.base_dim)

    def time_grid(self, latents: Latents,
                  shift: Optional[float] = None) -> Tensor:
        """Shifted times [num_points], from 1 down to the shifted t_end."""
        return sampling_grid(self.num_steps, self.resolve_shift(
            latents, shift), self.t_end)

    def step(self, fn: VelocityFn, x: Latents, t: Tensor, t_next: Tensor,
             y: Tensor) -> Latents:
        """One step from ``t`` to ``t_next`` (both [B])."""
        raise NotImplementedError

    def __call__(self, velocity_fn: VelocityFn, noise: Latents, y: Tensor,
                 shift: Optional[float] = None) -> Latents:
        """Integrate from ``noise`` (t = 1) to the latents at ``t_end``.

        Args:
            velocity_fn: ``fn(x, t [B], y [B]) -> v`` (latent dicts).
            noise: ``{'patch': [B, C, h, w], 'query': [B, Q, C]}``.
            y: [B] long labels.
            shift: overrides the configured shift for this call.

        Returns:
            Latents with the keys and shapes of ``noise``. Deterministic
            given ``noise`` (and a deterministic ``velocity_fn``).
        """
        if not isinstance(noise, dict) or 'patch' not in noise:
            raise ValueError("noise must be a latents dict with 'patch'")
        ref = noise['patch']
        batch = ref.shape[0]
        if y.shape != (batch, ):
            raise ValueError(f'y must be [B={batch}], got {tuple(y.shape)}')
        tdtype = torch.promote_types(ref.dtype, torch.float32)
        grid = self.time_grid(noise, shift).to(ref.device, tdtype)
        x = dict(noise)
        for i in range(self.num_steps):
            x = self.step(velocity_fn, x, grid[i].expand(batch),
                          grid[i + 1].expand(batch), y)
        return x

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_points={self.num_points}, '
                f'shift={self.shift}, t_end={self.t_end}, '
                f'shift_dim={self.shift_dim!r})')


def _advance(x: Latents, v: Latents, dt: Tensor) -> Latents:
    """``x + dt * v`` key by key (dt [B])."""
    return {k: a + dt.view(-1, *([1] * (a.dim() - 1))).to(a.dtype) * v[k]
            for k, a in x.items()}


@MODELS.register_module()
class EulerSampler(ODESampler):
    """First-order Euler steps: ``x <- x + (t_next - t) v(x, t)``."""

    def step(self, fn: VelocityFn, x: Latents, t: Tensor, t_next: Tensor,
             y: Tensor) -> Latents:
        return _advance(x, fn(x, t, y), t_next - t)


@MODELS.register_module()
class HeunSampler(ODESampler):
    """Second-order Heun steps (trapezoid of the velocities at both ends);
    two velocity evaluations per step."""

    evals_per_step = 2

    def step(self, fn: VelocityFn, x: Latents, t: Tensor, t_next: Tensor,
             y: Tensor) -> Latents:
        dt = t_next - t
        v = fn(x, t, y)
        v_next = fn(_advance(x, v, dt), t_next, y)
        return _advance(x, {k: 0.5 * (v[k] + v_next[k]) for k in v}, dt)
