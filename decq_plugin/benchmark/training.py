"""Short, identical training of every tokenizer of a suite, so that the
built-in comparison compares trained tokenizers rather than random ones.

Every tokenizer gets the same budget, data, optimiser and seed: built under
``torch.manual_seed(seed)`` (the frozen VFM is built first, so tokenizers
sharing an encoder config share the same frozen VFM), then its trainable
parts (decoder, condensers and queries, the VFM itself for VFM-finetune)
take ``iters`` AdamW steps on the L1 reconstruction loss of the
noise-augmented latents plus the tokenizer's own auxiliary losses
(distillation), over the suite's training images.

    settings = TrainSettings(iters=300, batch_size=8, lr=1e-3, seeds=[0, 1])
    losses = train_tokenizer(tokenizer, dataset, settings, seed=0)
"""
from dataclasses import asdict, dataclass, field
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from decq_plugin.registry import DATASETS


@dataclass
class TrainSettings:
    """The shared training budget of a suite's ``"train"`` block."""
    dataset: dict = field(default_factory=lambda: dict(
        type='DemoImageDataset', mode='train', image_size=64))
    iters: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])

    def __post_init__(self) -> None:
        for name in ('iters', 'batch_size'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or \
                    value < 1:
                raise ValueError(f'train.{name} must be a positive int, got '
                                 f'{value!r}')
        if not self.lr > 0:
            raise ValueError(f'train.lr must be positive, got {self.lr!r}')
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError('train.seeds must list distinct seeds, got '
                             f'{self.seeds!r}')
        self.seeds = [int(s) for s in self.seeds]

    def as_dict(self) -> dict:
        return asdict(self)


def build_train_dataset(settings: TrainSettings) -> Dataset:
    return DATASETS.build(dict(settings.dataset))


def trainable_parameters(tokenizer: nn.Module) -> List[nn.Parameter]:
    params = [p for p in tokenizer.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f'{type(tokenizer).__name__} has nothing to train')
    return params


def train_tokenizer(tokenizer: nn.Module, dataset: Dataset,
                    settings: TrainSettings, seed: int) -> Dict[str, float]:
    """Train ``tokenizer`` in place (see the module docstring); returns
    the mean loss of the first and the last tenth of the steps."""
    device = next(tokenizer.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(dataset, replacement=True,
                            num_samples=settings.iters * settings.batch_size,
                            generator=generator)
    loader = DataLoader(dataset, batch_size=settings.batch_size,
                        sampler=sampler, drop_last=True)
    params = trainable_parameters(tokenizer)
    try:  # one kernel for all parameters: tiny models are overhead-bound
        optimizer = torch.optim.AdamW(params, lr=settings.lr,
                                      betas=(0.9, 0.95), weight_decay=0.0,
                                      fused=True)
    except (RuntimeError, TypeError):  # no fused AdamW for this device
        optimizer = torch.optim.AdamW(params, lr=settings.lr,
                                      betas=(0.9, 0.95), weight_decay=0.0,
                                      foreach=True)
    losses = []
    tokenizer.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # crops and noise augmentation
        for batch in loader:
            images = batch['inputs'].to(device)
            out = tokenizer(images)
            loss = F.l1_loss(out['recon'], images) + sum(
                v for k, v in out.items() if k.startswith('loss'))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    tokenizer.eval()
    tenth = max(1, len(losses) // 10)
    return dict(first_loss=sum(losses[:tenth]) / tenth,
                last_loss=sum(losses[-tenth:]) / tenth, steps=len(losses))
