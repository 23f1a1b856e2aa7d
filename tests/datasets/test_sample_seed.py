"""Per-sample seeds: the same sample gets the same augmentation whichever
worker, process or resumed run loads it; epochs differ."""
import pickle

import torch
from torch.utils.data import DataLoader

from decq_plugin.datasets.demo_images import DemoImageDataset
from decq_plugin.datasets.sample_seed import (SeededIndex, SeededSampler,
                                              mix_seed, sample_generator)


def test_mix_seed_depends_on_every_value_and_order():
    seeds = {mix_seed(0, e, i) for e in range(3) for i in range(50)}
    assert len(seeds) == 150
    assert mix_seed(1, 2) != mix_seed(2, 1)
    assert 0 <= mix_seed(7, 7) < 2 ** 63


def test_seeded_index_is_an_int_that_survives_pickling():
    index = SeededIndex(5, 123)
    assert index == 5 and [10, 11, 12, 13, 14, 15][index] == 15
    back = pickle.loads(pickle.dumps(index))
    assert back == 5 and back.seed == 123
    assert sample_generator(5) is None  # plain ints: the global RNG
    assert torch.equal(torch.rand(3, generator=sample_generator(index)),
                       torch.rand(3, generator=sample_generator(back)))


def _epoch(dataset, sampler, epoch, workers):
    sampler.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler,
                        num_workers=workers,
                        persistent_workers=False)
    return torch.cat([b['inputs'] for b in loader])


def test_sampler_makes_crops_independent_of_workers_and_global_rng():
    dataset = DemoImageDataset(image_size=16, samples_per_epoch=8)
    sampler = SeededSampler(dataset, shuffle=True, seed=3)
    torch.manual_seed(0)
    a = _epoch(dataset, sampler, 0, 0)
    torch.manual_seed(99)  # the global RNG no longer matters
    b = _epoch(dataset, sampler, 0, 2)
    assert torch.equal(a, b)
    c = _epoch(dataset, sampler, 1, 0)
    assert not torch.equal(a, c)  # another epoch, other crops
    # The order is DefaultSampler's order.
    from mmengine.dataset import DefaultSampler
    plain = DefaultSampler(dataset, shuffle=True, seed=3)
    plain.set_epoch(1)
    sampler.set_epoch(1)
    assert list(plain) == [int(i) for i in sampler]
