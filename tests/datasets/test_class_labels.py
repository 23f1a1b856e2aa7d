"""ClassLabelDataset: class-balanced labels in RAE's seeded random order."""
import torch

from decq_plugin.datasets.class_labels import ClassLabelDataset


def test_balanced_seeded_random_order_as_rae():
    data = ClassLabelDataset(num_classes=10, num_per_class=5, seed=3)
    labels = [data[i]['data_samples']['gt_label'] for i in range(len(data))]
    assert sorted(labels) == sorted(list(range(10)) * 5)
    # RAE's sampler: randperm of the sorted pool, generator seeded with seed
    pool = torch.arange(10).repeat_interleave(5)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(3))
    assert labels == pool[perm].tolist()
    # every split of 10 consecutive samples sees several classes
    assert min(len(set(labels[i:i + 10])) for i in range(0, 50, 10)) > 3
    assert [data[i]['data_samples']['seed'] for i in (0, 7)] == [3, 10]
    assert int(data[4]['inputs']) == labels[4]
    other = ClassLabelDataset(num_classes=10, num_per_class=5, seed=4)
    assert other.labels != data.labels


def test_sorted_order_and_class_list():
    data = ClassLabelDataset(classes=[7, 2], num_per_class=2, shuffle=False)
    assert data.labels == [7, 7, 2, 2]
    assert len(data) == 4
