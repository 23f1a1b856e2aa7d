"""A noisy toy model, its dataset and a Runner builder for the resume tests
(test_resume_on_device, test_resumable_checkpoint_hook,
test_resume_bit_identical)."""
import itertools
from typing import List, Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

_names = itertools.count()


class NoisyModel(BaseModel):
    """Input noise and dropout: every step draws from torch's global RNG.

    The loss is NaN at every call when ``nan_at`` is 0, at call ``nan_at``
    when it is positive, never when it is negative.
    """

    def __init__(self, nan_at: int = -1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5),
                                 nn.Linear(16, 1))
        self.nan_at, self.calls = nan_at, 0

    def forward(self, inputs, data_samples=None, mode='loss'):
        self.calls += 1
        x = inputs + 0.1 * torch.randn_like(inputs)
        loss = (self.net(x).squeeze(1) - data_samples['y']).pow(2).mean()
        if self.nan_at == 0 or self.calls == self.nan_at:
            loss = loss * float('nan')
        return dict(loss=loss)


class Items(Dataset):
    """16 fixed items ``dict(inputs=Tensor[4], data_samples=dict(y))``.

    The inputs come from a generator seeded with 0; the targets too, or,
    with ``global_targets``, from torch's global RNG.
    """

    def __init__(self, global_targets: bool = False) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(16, 4, generator=g)
        self.y = (torch.randn(16) if global_targets else
                  torch.randn(16, generator=g))

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i):
        return dict(inputs=self.x[i], data_samples=dict(y=self.y[i]))


def noisy_runner(work_dir, *, name: str, train_cfg: dict, checkpoint: dict,
                 non_finite: Optional[dict] = None,
                 custom_hooks: Optional[List[dict]] = None,
                 nan_at: int = -1, global_targets: bool = False,
                 workers: int = 0, persistent: bool = False,
                 resume: bool = False, load_from: Optional[str] = None,
                 **extra) -> Runner:
    """A Runner of :class:`NoisyModel` on :class:`Items` in shuffled batches
    of 4 (``SeededSampler``), AdamW at lr 1e-2, seed 0.

    ``checkpoint`` and ``non_finite`` (left out when None) are the default
    hooks of those names, next to ``SafeCheckpointHook`` and a logger at
    every iteration; ``name`` prefixes the experiment name; ``extra`` goes
    to the Runner as it is.
    """
    default_hooks = dict(checkpoint=checkpoint,
                         safe_checkpoint=dict(type='SafeCheckpointHook'))
    if non_finite is not None:
        default_hooks['non_finite'] = non_finite
    default_hooks['logger'] = dict(type='LoggerHook', interval=1)
    return Runner(
        model=NoisyModel(nan_at), work_dir=str(work_dir),
        experiment_name=f'{name}_{next(_names)}',
        train_dataloader=dict(
            dataset=Items(global_targets),
            sampler=dict(type='SeededSampler', shuffle=True),
            batch_size=4, num_workers=workers,
            persistent_workers=persistent,
            collate_fn=dict(type='default_collate')),
        train_cfg=train_cfg,
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
        custom_hooks=custom_hooks,
        default_hooks=default_hooks,
        randomness=dict(seed=0), default_scope='decq_plugin',
        resume=resume, load_from=load_from, log_level='WARNING', **extra)
