"""A tiny model/dataset and a Runner factory for the engine tests."""
import itertools
from typing import Callable, Optional

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

_names = itertools.count()


class ToyModel(BaseModel):
    """A frozen 'encoder' (with a buffer), a trainable head; inputs [B,4]."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(4, 8).requires_grad_(False)
        self.frozen.register_buffer('scale', torch.full((8, ), 0.5))
        self.head = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, inputs, data_samples=None, mode='loss'):
        feats = torch.tanh(self.frozen(inputs)) * self.frozen.scale
        out = self.head(feats).squeeze(1)
        if mode == 'loss':
            return dict(loss=(out - data_samples['y']).pow(2).mean())
        return [dict(pred=o) for o in out]


class ToyDataset(Dataset):
    """Fixed random items ``dict(inputs=Tensor[4], data_samples=dict(y))``."""

    def __init__(self, size: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(size, 4, generator=g)
        self.y = torch.randn(size, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], data_samples=dict(y=self.y[i]))


def _make_runner(work_dir, *, max_iters: int = 9, interval: int = 3,
                 resume: bool = False, load_from: Optional[str] = None,
                 ema_momentum: Optional[float] = None,
                 safe: bool = True, dataset_size: int = 40) -> Runner:
    """Batches of 4 from ``dataset_size`` items; a run that goes past an epoch
    end costs 2 s (MMEngine's iterator sleeps when it restarts)."""
    torch.manual_seed(0)
    default_hooks = dict(
        checkpoint=dict(type='CheckpointHook', interval=interval,
                        by_epoch=False, max_keep_ckpts=-1),
        logger=dict(type='LoggerHook', interval=1))
    if safe:  # as in configs/_base_/default_runtime.py
        default_hooks['safe_checkpoint'] = dict(type='SafeCheckpointHook')
    hooks = []
    if ema_momentum is not None:
        hooks.append(dict(type='EMAHook',
                          ema_type='TrainableExponentialMovingAverage',
                          momentum=ema_momentum))
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=f'engine_test_{next(_names)}',
        train_dataloader=dict(
            dataset=ToyDataset(dataset_size),
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=4,
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(
            optimizer=dict(type='AdamW', lr=1e-2, betas=(0.9, 0.95))),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                 end=2),
            dict(type='CosineAnnealingLR', by_epoch=False, begin=2,
                 end=max_iters, eta_min=1e-3),
        ],
        default_hooks=default_hooks,
        custom_hooks=hooks,
        randomness=dict(seed=0),
        default_scope='decq_plugin',
        resume=resume,
        load_from=load_from,
        log_level='WARNING')


@pytest.fixture
def make_runner() -> Callable[..., Runner]:
    """``make_runner(work_dir, max_iters=9, interval=3, resume=False,
    load_from=None, ema_momentum=None, safe=True, dataset_size=40)``."""
    return _make_runner


@pytest.fixture
def toy_model() -> ToyModel:
    torch.manual_seed(0)
    return ToyModel()
