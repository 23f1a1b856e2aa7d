"""Class labels (and noise seeds) to sample from: the "dataset" of a
generation evaluation loop."""
from typing import Dict, Optional, Sequence

import torch
from torch.utils.data import Dataset

from decq_plugin.registry import DATASETS


@DATASETS.register_module()
class ClassLabelDataset(Dataset):
    """Class-balanced labels (``num_per_class`` of each class) in a seeded
    random order, as RAE's sampler writes them (``randperm`` of the sorted
    pool with a generator seeded with ``seed``), so that the consecutive
    splits of the Inception Score each see all classes; item ``i`` has noise
    seed ``seed + i`` (samples do not depend on batch size or the number of
    GPUs). ``shuffle=False``: sorted by class, item ``i`` has class
    ``classes[i // num_per_class]``.

    Items: ``dict(inputs=LongTensor[] label, data_samples=dict(gt_label=int,
    seed=int))``.

    Args:
        num_classes: classes 0..num_classes-1 (ignored when ``classes`` is
            given).
        num_per_class: samples per class (ADM protocol: 50 for 1000 classes).
        classes: explicit class list.
        seed: seed of item 0 and of the class order.
        shuffle: random class order (default) or sorted.
    """

    def __init__(self,
                 num_classes: int = 1000,
                 num_per_class: int = 50,
                 classes: Optional[Sequence[int]] = None,
                 seed: int = 0,
                 shuffle: bool = True) -> None:
        super().__init__()
        if num_per_class < 1:
            raise ValueError(f'num_per_class={num_per_class} must be >= 1')
        if classes is None:
            if num_classes < 1:
                raise ValueError(f'num_classes={num_classes} must be >= 1')
            classes = range(num_classes)
        self.classes = [int(c) for c in classes]
        if not self.classes or min(self.classes) < 0:
            raise ValueError(f'classes must be non-negative, got {classes}')
        self.num_per_class = int(num_per_class)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        pool = torch.arange(len(self.classes)).repeat_interleave(
            self.num_per_class)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed)
            pool = pool[torch.randperm(pool.numel(), generator=generator)]
        self.labels = [self.classes[i] for i in pool.tolist()]

    def __len__(self) -> int:
        return len(self.classes) * self.num_per_class

    def __getitem__(self, index: int) -> Dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        label = self.labels[index]
        return dict(inputs=torch.tensor(label),
                    data_samples=dict(gt_label=label, seed=self.seed + index))
