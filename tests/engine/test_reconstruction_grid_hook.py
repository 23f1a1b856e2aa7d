"""ReconstructionGridHook: originals beside their reconstructions, from the
EMA-or-current model, on fixed images."""
import numpy as np
import pytest
import torch
from torch import nn

from decq_plugin.engine.hooks.reconstruction_grid_hook import (
    ReconstructionGridHook, pairs_side_by_side)


class _Invert(nn.Module):
    """A stand-in tokenizer: reconstruct(x) = 1 - x (scaled by a weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def reconstruct(self, images: torch.Tensor,
                    check_range: bool = True) -> torch.Tensor:
        return (1 - images) * self.w


class _Model(nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.tokenizer = _Invert()


def test_pairs_alternate():
    a, b = torch.zeros(3, 3, 2, 2), torch.ones(3, 3, 2, 2)
    out = pairs_side_by_side(a, b)
    assert out.shape == (6, 3, 2, 2)
    assert out[0::2].eq(0).all() and out[1::2].eq(1).all()
    with pytest.raises(ValueError):
        pairs_side_by_side(a, b[:2])


def test_grid_shows_each_image_beside_its_reconstruction():
    hook = ReconstructionGridHook(num_images=3, pairs_per_row=2, padding=1)
    hook.images = torch.rand(3, 3, 8, 8)
    model = _Model()
    grid = hook.make_grid(model).numpy()
    assert grid.shape == (2 * 9 + 1, 4 * 9 + 1, 3)  # 2 rows, 4 cells
    expected = hook.images.permute(0, 2, 3, 1).mul(255).round().numpy()
    recon = (1 - hook.images).permute(0, 2, 3, 1).mul(255).round().numpy()
    # image 2 opens the second row; its reconstruction follows it
    assert np.array_equal(grid[1:9, 1:9], expected[0])
    assert np.array_equal(grid[1:9, 10:18], recon[0])
    assert np.array_equal(grid[1:9, 19:27], expected[1])
    assert np.array_equal(grid[10:18, 1:9], expected[2])
    assert np.array_equal(grid[10:18, 10:18], recon[2])
    assert model.tokenizer.training  # mode restored


def test_needs_images_and_a_tokenizer():
    hook = ReconstructionGridHook()
    with pytest.raises(RuntimeError):
        hook.make_grid(_Model())
    with pytest.raises(ValueError, match='num_images'):
        ReconstructionGridHook(num_images=0)
