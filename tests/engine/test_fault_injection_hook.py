"""FaultInjectionHook: NaN inputs at chosen iterations, one SIGKILL."""
import signal
from types import SimpleNamespace

import pytest
import torch

from decq_plugin.engine.hooks import fault_injection_hook as module
from decq_plugin.engine.hooks.fault_injection_hook import (
    FaultInjectionHook, poison_first_float)


def _runner(iteration):
    return SimpleNamespace(iter=iteration)


def test_nan_goes_into_the_chosen_iterations_only():
    hook = FaultInjectionHook(nan_iters=[2])
    first = dict(inputs=dict(patch=torch.zeros(2, 3), query=torch.zeros(2)))
    hook.before_train_iter(_runner(0), 0, first)
    assert torch.isfinite(first['inputs']['patch']).all()
    second = dict(inputs=dict(patch=torch.zeros(2, 3), query=torch.zeros(2)))
    hook.before_train_iter(_runner(1), 1, second)
    assert torch.isnan(second['inputs']['patch']).sum() == 1
    assert torch.isfinite(second['inputs']['query']).all()


def test_integer_inputs_are_refused():
    hook = FaultInjectionHook(nan_iters=[1])
    with pytest.raises(TypeError, match='no floating tensor'):
        hook.before_train_iter(_runner(0), 0,
                               dict(inputs=torch.zeros(2, dtype=torch.uint8)))
    assert poison_first_float([torch.zeros(1, dtype=torch.long),
                               torch.ones(3)])


def test_kill_happens_once(tmp_path, monkeypatch):
    kills = []
    monkeypatch.setattr(module.os, 'kill',
                        lambda pid, sig: kills.append(sig))
    marker = tmp_path / 'killed'
    hook = FaultInjectionHook(kill_iter=3, kill_marker=str(marker))
    for step in range(5):
        hook.before_train_iter(_runner(step), step, dict(inputs=None))
    assert kills == [signal.SIGKILL] and marker.is_file()
    again = FaultInjectionHook(kill_iter=3, kill_marker=str(marker))
    again.before_train_iter(_runner(2), 2, dict(inputs=None))
    assert kills == [signal.SIGKILL]


def test_kill_needs_a_marker():
    with pytest.raises(ValueError, match='kill_marker'):
        FaultInjectionHook(kill_iter=3)
