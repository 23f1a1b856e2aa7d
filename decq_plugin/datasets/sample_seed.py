"""Per-sample random seeds: augmentations that do not depend on workers,
processes or where a run was resumed.

:class:`SeededSampler` (a ``DefaultSampler``) yields :class:`SeededIndex`
values: ints that also carry ``seed = mix(sampler seed, epoch, index)``.
Datasets draw their augmentation from :func:`sample_generator` of the index
they receive, so sample ``i`` of epoch ``e`` gets the same crop and flip
whichever worker or process loads it, whether ``persistent_workers`` keeps
a worker's RNG across epochs, and whether the run was resumed. A plain int
index (any other sampler) gives ``None``: the dataset then uses torch's
global RNG as before.
"""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.dataset import DefaultSampler

from decq_plugin.registry import DATA_SAMPLERS

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit seed from ints (splitmix64 over the values, in order)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1


class SeededIndex(int):
    """A dataset index with the seed of that sample's randomness."""

    seed: int

    def __new__(cls, index: int, seed: int) -> 'SeededIndex':
        obj = super().__new__(cls, index)
        obj.seed = int(seed)
        return obj

    def __reduce__(self):  # workers receive indices through pickle
        return SeededIndex, (int(self), self.seed)

    def __repr__(self) -> str:
        return f'SeededIndex({int(self)}, seed={self.seed})'


def sample_generator(index: int) -> Optional[torch.Generator]:
    """A CPU generator seeded for this sample, or ``None`` for a plain
    index (use the global RNG)."""
    seed = getattr(index, 'seed', None)
    if seed is None:
        return None
    return torch.Generator().manual_seed(seed)


def seed_everything_for(index: int) -> None:
    """Seed python, numpy and torch's global RNGs from ``index.seed`` (for
    transforms that only know the global RNGs); no-op for a plain int."""
    seed = getattr(index, 'seed', None)
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


@DATA_SAMPLERS.register_module()
class SeededSampler(DefaultSampler):
    """``DefaultSampler`` whose indices carry per-sample seeds.

    Args:
        dataset, shuffle, seed, round_up: as for ``DefaultSampler`` (the
            order of the indices is exactly its order).

    Sample ``i`` of epoch ``e`` gets ``seed = mix_seed(seed, e, i)``;
    ``DistSamplerSeedHook`` sets the epoch.
    """

    def __iter__(self):
        epoch, seed = int(self.epoch), int(self.seed)
        for index in super().__iter__():
            yield SeededIndex(index, mix_seed(seed, epoch, index))
