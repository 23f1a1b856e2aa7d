"""What every periodic image-grid hook shares: when to draw, with which
weights, and where the grid goes.

A subclass draws its fixed inputs in :meth:`before_run` and turns a model
into a uint8 grid ``[H', W', 3]`` in :meth:`make_grid`; this base calls it
every ``interval`` training iterations (and after training), with the EMA
weights when an ``EMAHook`` is active, on the main process only, saves
``work_dir/<out_dir>/iter_XXXXXX.png`` and sends the grid to
``runner.visualizer.add_image`` (Local, TensorBoard, W&B backends).
"""
import os
import os.path as osp

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import EMAHook, Hook
from mmengine.model import is_model_wrapper
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid


def grid_image(images: Tensor, nrow: int, padding: int = 2) -> Tensor:
    """Images [N,3,H,W] in [0,1] -> one uint8 grid [H', W', 3] (RGB)."""
    grid = make_grid(images.float().clamp(0, 1).cpu(), nrow=nrow,
                     padding=padding, pad_value=1.0)
    return grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


def check_int(name: str, value, low: int) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an int >=
    ``low``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f'{name} must be an int >= {low}, got {value!r}')


class PeriodicGridHook(Hook):
    """Base of the grid hooks (see the module docstring).

    Args:
        interval: iterations between grids (0: only after training).
        use_ema: draw with the EMA weights when an EMAHook is active.
        after_train: also draw once after the last iteration.
        out_dir: folder under ``runner.work_dir``.
        name: image name given to the visualizer.
        padding: pixels between grid cells.
    """

    priority = 'LOW'  # after EMAHook's update (NORMAL)

    def __init__(self,
                 interval: int,
                 use_ema: bool = True,
                 after_train: bool = True,
                 out_dir: str = 'samples',
                 name: str = 'samples',
                 padding: int = 2) -> None:
        check_int('interval', interval, 0)
        check_int('padding', padding, 0)
        self.interval = interval
        self.use_ema = use_ema
        self.after_train_enabled = after_train
        self.out_dir = out_dir
        self.name = name
        self.padding = padding
        self._last_step = -1

    # -- what subclasses provide ---------------------------------------------
    def make_grid(self, model) -> Tensor:
        """The grid drawn with ``model``: uint8 ``[H', W', 3]``."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------
    @staticmethod
    def _unwrap(model):
        return model.module if is_model_wrapper(model) else model

    def _sampling_model(self, runner):
        if self.use_ema:
            for hook in runner.hooks:
                if isinstance(hook, EMAHook) and hasattr(hook, 'ema_model'):
                    return hook.ema_model.module
        return self._unwrap(runner.model)

    def _draw(self, runner, step: int) -> None:
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
            self._draw(runner, runner.iter + 1)

    def after_train(self, runner) -> None:
        if self.after_train_enabled:
            self._draw(runner, runner.iter)
