"""A resume whose checkpoint was mapped onto a GPU.

MMEngine's runner loads a resumed checkpoint onto the training device, so on
a GPU every tensor in it (weights, optimizer state, EMA, random states)
arrives as a CUDA tensor, which refuses ``.numpy()`` until it is copied to
the CPU. :class:`DeviceTensor` behaves the same way on the CPU, so these
tests reach the paths that once crashed only on a GPU.
"""
import numpy as np
import pytest
import torch

import decq_plugin.engine.checkpoint as checkpoint_module
from decq_plugin.engine import random_state

from toy_runner import noisy_runner


class DeviceTensor(torch.Tensor):
    """A tensor that, like a CUDA one, must be moved before ``.numpy()``."""

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. "
                        'Use Tensor.cpu() to copy the tensor to host memory '
                        'first.')

    def cpu(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).clone()

    def to(self, *args, **kwargs):
        target = kwargs.get('device', args[0] if args else None)
        if isinstance(target, (str, torch.device)) and \
                torch.device(target).type == 'cpu':
            return self.cpu()
        return super().to(*args, **kwargs)


def on_device(obj):
    """``obj`` with every tensor turned into a :class:`DeviceTensor`."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().as_subclass(DeviceTensor)
    if isinstance(obj, dict):
        out = type(obj)() if type(obj) is not dict else {}
        out.update((k, on_device(v)) for k, v in obj.items())
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_device(v) for v in obj)
    return obj


def test_device_tensor_refuses_numpy_as_cuda_does():
    t = on_device(torch.arange(3))
    with pytest.raises(TypeError, match='cpu'):
        t.numpy()
    assert t.cpu().numpy().tolist() == [0, 1, 2]


def test_restore_takes_a_state_mapped_onto_a_device():
    state = on_device(random_state.capture())
    first = (float(np.random.rand()), torch.rand(3))
    random_state.restore(state, "checkpoint['random_states']")
    second = (float(np.random.rand()), torch.rand(3))
    assert first[0] == second[0] and torch.equal(first[1], second[1])


def _runner(work_dir, epochs, resume=False):
    return noisy_runner(
        work_dir, name='resume_on_device', global_targets=True,
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        checkpoint=dict(type='ResumableCheckpointHook', interval=1),
        non_finite=dict(type='NonFiniteGuardHook'),
        custom_hooks=[dict(type='EMAHook', momentum=0.1, priority=49,
                           ema_type='TrainableExponentialMovingAverage')],
        resume=resume)


def test_resume_from_a_checkpoint_mapped_onto_a_device(tmp_path,
                                                       monkeypatch):
    """Every tensor of the resumed checkpoint is device-like (weights,
    optimizer, EMA, random states, counters): the run goes on past the
    epoch end, with the saved random state restored, and saves again."""
    _runner(tmp_path, epochs=1).train()
    saved = checkpoint_module.safe_load_checkpoint(
        str(tmp_path / 'epoch_1.pth'))
    load = checkpoint_module.safe_load_checkpoint
    mapped, restored = [], []

    def load_onto_device(*args, **kwargs):
        mapped.append(args[0])
        return on_device(load(*args, **kwargs))

    def spy_restore(state, where='random state'):
        real_restore(state, where)
        restored.append(torch.get_rng_state())

    real_restore = random_state.restore
    monkeypatch.setattr(checkpoint_module, 'safe_load_checkpoint',
                        load_onto_device)
    monkeypatch.setattr(random_state, 'restore', spy_restore)
    resumed = _runner(tmp_path, epochs=2, resume=True)
    resumed.train()
    assert mapped == [str(tmp_path / 'epoch_1.pth')]
    assert resumed.train_loop.epoch == 2
    assert torch.equal(restored[0], saved['random_states'][0]['torch'])
    again = load(str(tmp_path / 'epoch_2.pth'))
    assert again['meta']['epoch'] == 2
    assert all(bool(torch.isfinite(v).all())
               for v in again['state_dict'].values())
