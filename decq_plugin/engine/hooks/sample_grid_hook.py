"""Periodic sample grids of a class-conditional generator.

Targets models with ``sample(labels [B], noise=latents) -> images [B,3,H,W]
in [0,1]`` and ``make_noise(batch, generator=...)`` (the stage-2
``LatentDiffusionModel``). The noise and the classes are drawn once, at
``before_run``, from ``seed``: successive grids differ only through the
weights, so they show training progress.
"""
import math
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

from decq_plugin.registry import HOOKS
from .grid_hook import PeriodicGridHook, check_int, grid_image

__all__ = ['SampleGridHook', 'grid_image']


@HOOKS.register_module()
class SampleGridHook(PeriodicGridHook):
    """Every ``interval`` training iterations (and after training) sample a
    grid from fixed noise and fixed classes, save it as
    ``work_dir/<out_dir>/iter_XXXXXX.png`` and send it to
    ``runner.visualizer.add_image(name, grid, step=iter)`` (TensorBoard,
    W&B, ... backends).

    Weights: with ``use_ema=True`` and an ``EMAHook`` in the runner, the
    grid is sampled by the EMA copy of the model (``ema_hook.ema_model
    .module``); otherwise by the model's current weights. Sampling runs in
    eval mode on the main process only and uses no global RNG, so training
    is not perturbed.

    Args:
        interval: iterations between grids (0: only after training).
        num_samples: images in the grid.
        nrow: images per grid row (default: ceil(sqrt(num_samples))).
        classes: the classes of the images (cycled to ``num_samples``);
            default evenly spread over ``model.num_classes``.
        seed: seed of the fixed noise.
        batch_size: images sampled per call.
        use_ema: sample with the EMA weights when an EMAHook is active.
        after_train: also sample once after the last iteration.
        out_dir: folder under ``runner.work_dir``.
        name: image name given to the visualizer.
        padding: pixels between grid cells.
    """

    def __init__(self,
                 interval: int = 5000,
                 num_samples: int = 16,
                 nrow: Optional[int] = None,
                 classes: Optional[Sequence[int]] = None,
                 seed: int = 0,
                 batch_size: int = 16,
                 use_ema: bool = True,
                 after_train: bool = True,
                 out_dir: str = 'samples',
                 name: str = 'samples',
                 padding: int = 2) -> None:
        super().__init__(interval, use_ema, after_train, out_dir, name,
                         padding)
        check_int('num_samples', num_samples, 1)
        check_int('batch_size', batch_size, 1)
        if nrow is not None and (not isinstance(nrow, int) or nrow < 1):
            raise ValueError(f'nrow must be a positive int, got {nrow!r}')
        if classes is not None and len(classes) == 0:
            raise ValueError('classes must name at least one class')
        self.num_samples = num_samples
        self.nrow = nrow or math.ceil(math.sqrt(num_samples))
        self.classes = None if classes is None else [int(c) for c in classes]
        self.seed = seed
        self.batch_size = batch_size
        self.noise: Optional[Dict[str, Tensor]] = None
        self.labels: Optional[Tensor] = None

    def before_run(self, runner) -> None:
        """Draw the fixed noise (on the CPU) and the fixed classes."""
        model = self._unwrap(runner.model)
        for attr in ('sample', 'make_noise', 'num_classes'):
            if not hasattr(model, attr):
                raise TypeError(f'SampleGridHook needs a model with .{attr} '
                                f'(e.g. LatentDiffusionModel), got '
                                f'{type(model).__name__}')
        n, num_classes = self.num_samples, int(model.num_classes)
        if self.classes is None:
            labels = torch.arange(n) * num_classes // n
        else:
            bad = [c for c in self.classes if not 0 <= c < num_classes]
            if bad:
                raise ValueError(f'classes {bad} are outside [0, '
                                 f'{num_classes})')
            labels = torch.tensor(self.classes).repeat(
                math.ceil(n / len(self.classes)))[:n]
        generator = torch.Generator().manual_seed(self.seed)
        self.noise = model.make_noise(n, generator=generator, device='cpu')
        self.labels = labels.long()

    @torch.no_grad()
    def make_grid(self, model) -> Tensor:
        """Sample the fixed grid with ``model``: uint8 [H', W', 3]."""
        if self.noise is None:
            raise RuntimeError('before_run has not drawn the noise yet')
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        images = []
        try:
            for lo in range(0, self.num_samples, self.batch_size):
                hi = min(lo + self.batch_size, self.num_samples)
                noise = {k: v[lo:hi].to(device) for k, v in self.noise.items()}
                images.append(model.sample(self.labels[lo:hi].to(device),
                                           noise=noise).cpu())
        finally:
            model.train(was_training)
        return grid_image(torch.cat(images), self.nrow, self.padding)
