"""Periodic sample grids of a class-conditional generator.

Targets models with ``sample(labels [B], noise=latents) -> images [B,3,H,W]
in [0,1]`` and ``make_noise(batch, generator=...)`` (the stage-2
``LatentDiffusionModel``). The noise and the classes are drawn once, at
``before_run``, from ``seed``: successive grids differ only through the
weights, so they show training progress.
"""
import math
import os
import os.path as osp
from typing import Dict, Optional, Sequence

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import EMAHook, Hook
from mmengine.model import is_model_wrapper
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from decq_plugin.registry import HOOKS


def grid_image(images: Tensor, nrow: int, padding: int = 2) -> Tensor:
    """Images [N,3,H,W] in [0,1] -> one uint8 grid [H', W', 3] (RGB)."""
    grid = make_grid(images.float().clamp(0, 1).cpu(), nrow=nrow,
                     padding=padding, pad_value=1.0)
    return grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


@HOOKS.register_module()
class SampleGridHook(Hook):
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

    priority = 'LOW'  # after EMAHook's update (NORMAL)

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
        for arg, value, low in (('interval', interval, 0),
                                ('num_samples', num_samples, 1),
                                ('batch_size', batch_size, 1),
                                ('padding', padding, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f'{arg} must be an int >= {low}, got '
                                 f'{value!r}')
        if nrow is not None and (not isinstance(nrow, int) or nrow < 1):
            raise ValueError(f'nrow must be a positive int, got {nrow!r}')
        if classes is not None and len(classes) == 0:
            raise ValueError('classes must name at least one class')
        self.interval = interval
        self.num_samples = num_samples
        self.nrow = nrow or math.ceil(math.sqrt(num_samples))
        self.classes = None if classes is None else [int(c) for c in classes]
        self.seed = seed
        self.batch_size = batch_size
        self.use_ema = use_ema
        self.after_train_enabled = after_train
        self.out_dir = out_dir
        self.name = name
        self.padding = padding
        self.noise: Optional[Dict[str, Tensor]] = None
        self.labels: Optional[Tensor] = None
        self._last_step = -1

    @staticmethod
    def _unwrap(model):
        return model.module if is_model_wrapper(model) else model

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

    def _sampling_model(self, runner):
        if self.use_ema:
            for hook in runner.hooks:
                if isinstance(hook, EMAHook) and hasattr(hook, 'ema_model'):
                    return hook.ema_model.module
        return self._unwrap(runner.model)

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

    def _sample(self, runner, step: int) -> None:
        if step == self._last_step:
            return
        self._last_step = step
        if not is_main_process():
            return
        grid = self.make_grid(self._sampling_model(runner))
        folder = osp.join(runner.work_dir, self.out_dir)
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(grid.numpy()).save(
            osp.join(folder, f'iter_{step:06d}.png'))
        runner.visualizer.add_image(self.name, grid.numpy(), step=step)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if self.interval and self.every_n_train_iters(runner, self.interval):
            self._sample(runner, runner.iter + 1)

    def after_train(self, runner) -> None:
        if self.after_train_enabled:
            self._sample(runner, runner.iter)
