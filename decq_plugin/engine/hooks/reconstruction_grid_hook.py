"""Periodic original | reconstruction grids of a stage-1 tokenizer.

Targets models holding a ``tokenizer`` with ``reconstruct(images [B,3,H,W]
in [0,1]) -> [B,3,H,W]`` (the stage-1 ``AutoencoderModel``). The images are
picked once, at ``before_run``: the first ``num_images`` of the validation
set (deterministic crops), else of the training set with ``seed``; so
successive grids differ only through the weights.
"""
from typing import Optional

import torch
from torch import Tensor

from decq_plugin.registry import HOOKS
from .grid_hook import PeriodicGridHook, check_int, grid_image


def pairs_side_by_side(originals: Tensor, recons: Tensor) -> Tensor:
    """``[N,3,H,W]`` twice -> ``[2N,3,H,W]`` ordered o0, r0, o1, r1, ...,
    so that a grid with an even row length shows pairs side by side."""
    if originals.shape != recons.shape:
        raise ValueError(f'originals {tuple(originals.shape)} and '
                         f'reconstructions {tuple(recons.shape)} differ')
    return torch.stack([originals, recons], dim=1).flatten(0, 1)


@HOOKS.register_module()
class ReconstructionGridHook(PeriodicGridHook):
    """Every ``interval`` training iterations (and after training) write a
    grid of fixed images, each followed by its reconstruction, to
    ``work_dir/<out_dir>/iter_XXXXXX.png`` and to the visualizer.

    Weights: the EMA copy when an ``EMAHook`` is active and ``use_ema``,
    else the current ones; eval mode, main process only, no global RNG.

    Args:
        interval: iterations between grids (0: only after training).
        num_images: originals in the grid (each with its reconstruction).
        pairs_per_row: original | reconstruction pairs per grid row.
        seed: picks the training images when there is no validation set.
        batch_size: images reconstructed per call.
        other args: see :class:`PeriodicGridHook`.
    """

    def __init__(self,
                 interval: int = 5000,
                 num_images: int = 8,
                 pairs_per_row: int = 4,
                 seed: int = 0,
                 batch_size: int = 16,
                 use_ema: bool = True,
                 after_train: bool = True,
                 out_dir: str = 'reconstructions',
                 name: str = 'reconstructions',
                 padding: int = 2) -> None:
        super().__init__(interval, use_ema, after_train, out_dir, name,
                         padding)
        check_int('num_images', num_images, 1)
        check_int('pairs_per_row', pairs_per_row, 1)
        check_int('batch_size', batch_size, 1)
        self.num_images = num_images
        self.pairs_per_row = pairs_per_row
        self.seed = seed
        self.batch_size = batch_size
        self.images: Optional[Tensor] = None

    @staticmethod
    def _dataset(runner):
        """The validation dataset when the runner has one, else the
        training dataset (``None`` when neither is configured)."""
        for attr in ('val_dataloader', 'train_dataloader'):
            try:  # the loops (and their loaders) exist by before_run
                loader = getattr(runner, attr)
            except (RuntimeError, AttributeError):  # no such loop
                continue
            if loader is not None:
                return loader.dataset
        return None

    def before_run(self, runner) -> None:
        """Pick the fixed images (on the CPU)."""
        model = self._unwrap(runner.model)
        # Under MMSeparateDistributedDataParallel the tokenizer itself is
        # wrapped.
        if not hasattr(self._unwrap(getattr(model, 'tokenizer', None)),
                       'reconstruct'):
            raise TypeError('ReconstructionGridHook needs a model with a '
                            '.tokenizer.reconstruct (e.g. AutoencoderModel), '
                            f'got {type(model).__name__}')
        dataset = self._dataset(runner)
        if dataset is None or len(dataset) == 0:
            raise ValueError('ReconstructionGridHook needs a validation or '
                             'training dataset to take its images from')
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            n = min(self.num_images, len(dataset))
            items = [dataset[i] for i in range(n)]
        self.images = torch.stack(
            [item['inputs'] if isinstance(item, dict) else item
             for item in items]).float()

    @torch.no_grad()
    def make_grid(self, model) -> Tensor:
        """Reconstruct the fixed images with ``model``: uint8 [H', W', 3]."""
        if self.images is None:
            raise RuntimeError('before_run has not picked the images yet')
        tokenizer = self._unwrap(model.tokenizer)
        device = next(tokenizer.parameters()).device
        was_training = tokenizer.training
        tokenizer.eval()
        recons = []
        try:
            for lo in range(0, len(self.images), self.batch_size):
                batch = self.images[lo:lo + self.batch_size].to(device)
                recons.append(tokenizer.reconstruct(
                batch, check_range=False).float().cpu())
        finally:
            tokenizer.train(was_training)
        cells = pairs_side_by_side(self.images, torch.cat(recons))
        return grid_image(cells, 2 * self.pairs_per_row, self.padding)
