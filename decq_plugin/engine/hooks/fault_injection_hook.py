"""Faults on purpose, for acceptance runs and drills of the recovery paths.

:class:`FaultInjectionHook` puts a NaN into the inputs of chosen training
iterations (as a damaged image or latent shard would) and can SIGKILL its
own process at a chosen iteration (as a pre-empted job dies), once: a
marker file remembers the kill, so the auto-resumed run goes on. Add it to
``custom_hooks`` of a throw-away config; never to a real recipe.
"""
import os
import signal
from typing import Any, Optional, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log

from decq_plugin.registry import HOOKS


def poison_first_float(inputs: Any) -> bool:
    """Set element 0 of the first floating tensor in ``inputs`` (a tensor,
    a dict such as ``{'patch': [B,C,h,w], ...}`` or a list) to NaN; return
    whether one was found."""
    if torch.is_tensor(inputs):
        if not inputs.is_floating_point() or inputs.numel() == 0:
            return False
        inputs.view(-1)[0] = float('nan')
        return True
    if isinstance(inputs, dict):
        return any(poison_first_float(v) for v in inputs.values())
    if isinstance(inputs, (list, tuple)):
        return any(poison_first_float(v) for v in inputs)
    return False


@HOOKS.register_module()
class FaultInjectionHook(Hook):
    """NaN inputs at ``nan_iters``; SIGKILL at ``kill_iter`` (once).

    Args:
        nan_iters: 1-based training iterations (over the whole run, as
            ``runner.iter + 1``) whose batch gets a NaN in its inputs.
        kill_iter: 1-based iteration at whose start the process kills
            itself with SIGKILL, unless ``kill_marker`` exists.
        kill_marker: file written just before the kill; required with
            ``kill_iter`` so that the resumed run is not killed again.
    """

    priority = 'VERY_HIGH'

    def __init__(self, nan_iters: Sequence[int] = (),
                 kill_iter: Optional[int] = None,
                 kill_marker: Optional[str] = None) -> None:
        self.nan_iters = {int(i) for i in nan_iters}
        if any(i < 1 for i in self.nan_iters):
            raise ValueError(f'nan_iters={sorted(self.nan_iters)}: '
                             'iterations are 1-based')
        if kill_iter is not None and not kill_marker:
            raise ValueError('kill_iter needs kill_marker (a file path), so '
                             'that the resumed run is not killed again')
        self.kill_iter = None if kill_iter is None else int(kill_iter)
        self.kill_marker = kill_marker

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        step = runner.iter + 1
        if step == self.kill_iter and not os.path.exists(self.kill_marker):
            with open(self.kill_marker, 'w') as f:
                f.write(f'killed at iteration {step}\n')
            print_log(f'FaultInjectionHook: SIGKILL at iteration {step}',
                      logger='current')
            os.kill(os.getpid(), signal.SIGKILL)
        if step in self.nan_iters:
            inputs = (data_batch or {}).get('inputs')
            if not poison_first_float(inputs):
                raise TypeError(
                    f'FaultInjectionHook: iteration {step} has no floating '
                    'tensor in its inputs to put a NaN into')
            print_log(f'FaultInjectionHook: NaN put into the inputs of '
                      f'iteration {step}', logger='current')
