"""EMA of the trainable parameters only.

The averaged copy shares every frozen parameter and every buffer with the
source model (the same tensor objects), so a frozen 86M-parameter VFM costs no
memory; only the parameters with ``requires_grad=True`` are copied and
averaged. Use it through MMEngine's stock hook::

    custom_hooks = [dict(type='EMAHook',
                         ema_type='TrainableExponentialMovingAverage',
                         momentum=0.0022)]  # EMA decay 0.9978

with ``default_scope = 'decq_plugin'`` (outside that scope write
``ema_type='decq_plugin.TrainableExponentialMovingAverage'``).
"""
import copy
import itertools
import logging
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Set, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import ExponentialMovingAverage, is_model_wrapper
from torch.nn.modules.module import _IncompatibleKeys

from decq_plugin.models.state_dict_keys import strip_wrappers
from decq_plugin.registry import MODELS


@MODELS.register_module()
class TrainableExponentialMovingAverage(ExponentialMovingAverage):
    r"""Exponential moving average of the trainable parameters of a model.

    Momentum follows MMEngine's convention, not the usual "decay":
    ``averaged = (1 - momentum) * averaged + momentum * source``, so an EMA
    decay ``d`` is ``momentum = 1 - d``: decay 0.9978 (stage 1) is
    ``momentum=0.0022``, decay 0.9995 (stage 2) is ``momentum=0.0005``.

    Which parameters are averaged is decided once, at construction: those with
    ``requires_grad=True`` in ``model``. Frozen parameters and all buffers of
    the copy *are* the source's tensors (shared, not copied), so they always
    hold the source's values; unfreezing one later does not make it averaged.

    :meth:`state_dict` holds ``'steps'`` and the averaged parameters under
    ``'module.<name>'`` (MMEngine's key convention, so ``EMAHook`` can swap
    them with ``checkpoint['state_dict']``); :meth:`load_state_dict` reads the
    same layout and ignores entries of shared tensors, which belong to the
    source model's own state dict.

    Args:
        model (nn.Module): The source model.
        momentum (float): Weight of the source in each update, in (0, 1).
        interval (int): Update every ``interval`` calls. Defaults to 1.
        device (torch.device | str, optional): Where the averaged copy lives.
            Frozen tensors on another device cannot be shared and are copied
            there (and re-synced from the source at every update).
        update_buffers (bool): Must be False: buffers are shared with the
            source model, never averaged.
    """

    def __init__(self,
                 model: nn.Module,
                 momentum: float = 0.0002,
                 interval: int = 1,
                 device: Optional[Union[torch.device, str]] = None,
                 update_buffers: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f'model must be an nn.Module, got {type(model).__name__}')
        if not 0.0 < float(momentum) < 1.0:
            raise ValueError(
                f'momentum must be in (0, 1), got {momentum}; for an EMA '
                'decay d pass momentum = 1 - d')
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(
                f'interval must be an int >= 1, got {interval!r}')
        if update_buffers:
            raise ValueError(
                'update_buffers=True is not supported: buffers are shared '
                'with the source model, only trainable parameters are '
                'averaged')
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(
                'model has no parameter with requires_grad=True: there is '
                'nothing to average')
        if float(momentum) > 0.5:
            print_log(
                f'EMA momentum={momentum} weighs the newest weights by more '
                'than half; momentum is 1 - decay (e.g. 0.0022 for a decay '
                'of 0.9978).', logger='current', level=logging.WARNING)
        # Skip BaseAveragedModel.__init__: it deep-copies the whole model.
        nn.Module.__init__(self)
        target = torch.device(device) if device is not None else None
        memo: Dict[int, torch.Tensor] = {}
        for t in itertools.chain(model.parameters(), model.buffers()):
            frozen = not (isinstance(t, nn.Parameter) and t.requires_grad)
            if frozen and (target is None or t.device == target):
                memo[id(t)] = t
        shared_ids = set(memo)  # deepcopy adds its own entries to memo
        self.module = copy.deepcopy(model, memo)
        self._trainable: List[str] = trainable
        own = set(self._trainable)
        self._unshared_buffers: List[str] = []
        for name, p in self.module.named_parameters():
            if name in own or id(p) not in shared_ids:
                p.requires_grad_(False)
        for name, b in self.module.named_buffers():
            if id(b) not in shared_ids:
                self._unshared_buffers.append(name)
        if target is not None:
            # Shared tensors already live on `target`: .to() leaves them be.
            self.module.to(target)
        named = itertools.chain(self.module.named_parameters(),
                                self.module.named_buffers())
        self._shared: Set[str] = {n for n, t in named if id(t) in shared_ids}
        self.interval = interval
        self.momentum = float(momentum)
        self.update_buffers = False
        # The step counter stays on the CPU: reading it needs no device sync.
        self.register_buffer('steps', torch.tensor(0, dtype=torch.long))
        params = dict(self.module.named_parameters())
        self.avg_parameters = {n: params[n] for n in self._trainable}
        # Checkpoint names: without the ``.module`` of wrapped submodules
        # (``MMSeparateDistributedDataParallel`` wraps children in place),
        # as the runner's ``get_state_dict`` writes the model's keys.
        wrappers = {n for n, m in self.module.named_modules()
                    if is_model_wrapper(m)}
        self._key = {n: strip_wrappers(n, wrappers) for n in self._trainable}

    @property
    def shared_names(self) -> Set[str]:
        """Names (in ``self.module``) of the tensors shared with the source."""
        return set(self._shared)

    def update_parameters(self, model: nn.Module) -> None:
        """Average the trainable parameters of ``model`` into the copy.

        The first call copies them; later calls apply :meth:`avg_func` every
        ``interval`` calls.
        """
        src = dict(model.named_parameters())
        with torch.no_grad():
            if self.steps == 0:
                for name, p_avg in self.avg_parameters.items():
                    p_avg.copy_(src[name])
            elif self.steps % self.interval == 0:
                pairs = [(p_avg.data, src[name].data.to(p_avg.device))
                         for name, p_avg in self.avg_parameters.items()
                         if p_avg.dtype.is_floating_point]
                self._average(pairs)
            if self._unshared_buffers:
                src_buffers = dict(model.named_buffers())
                own_buffers = dict(self.module.named_buffers())
                for name in self._unshared_buffers:
                    own_buffers[name].copy_(src_buffers[name])
        self.steps += 1

    def _average(self, pairs: List[tuple]) -> None:
        """Apply :meth:`avg_func` to (averaged, source) tensor pairs.

        MMEngine's EMA update ``averaged.lerp_(source, momentum)`` runs as
        one ``torch._foreach_lerp_`` per device and dtype instead of one
        kernel per tensor (hundreds for a ViT-XL decoder or a DiT-XL); a
        subclass with its own ``avg_func`` keeps the per-tensor loop."""
        if type(self).avg_func is not ExponentialMovingAverage.avg_func:
            for averaged, source in pairs:
                self.avg_func(averaged, source, self.steps)
            return
        groups: Dict[tuple, List[tuple]] = {}
        for averaged, source in pairs:
            key = (averaged.device, averaged.dtype, source.dtype)
            groups.setdefault(key, []).append((averaged, source))
        for group in groups.values():
            torch._foreach_lerp_([a for a, _ in group], [s for _, s in group],
                                 self.momentum)

    def _own_tensors(self) -> Dict[str, torch.Tensor]:
        """``'steps'`` and ``'module.<name>'`` of each averaged parameter."""
        out = OrderedDict(steps=self.steps)
        out.update((f'module.{self._key[n]}', p)
                   for n, p in self.avg_parameters.items())
        return out

    def state_dict(self,
                   destination: Optional[Dict] = None,
                   prefix: str = '',
                   keep_vars: bool = False) -> Dict[str, torch.Tensor]:
        """``{'steps': Tensor[], 'module.<trainable name>': Tensor, ...}``.

        Shared (frozen) tensors are left out: they are the source model's.
        """
        out = OrderedDict() if destination is None else destination
        for key, value in self._own_tensors().items():
            out[prefix + key] = value if keep_vars else value.detach()
        return out

    def load_state_dict(self,
                        state_dict: Mapping[str, torch.Tensor],
                        strict: bool = True) -> _IncompatibleKeys:
        """Load what :meth:`state_dict` wrote; nothing changes on an error.

        Entries naming a shared tensor (``'module.<frozen name>'``, e.g. from a
        full-model EMA) are ignored; other unknown keys are unexpected.
        """
        targets = self._own_tensors()
        own = list(targets)
        missing = [k for k in own if k not in state_dict]
        wrappers = {n for n, m in self.module.named_modules()
                    if is_model_wrapper(m)}
        shared = {f'module.{strip_wrappers(n, wrappers)}' for n in self._shared}
        unexpected = [
            k for k in state_dict if k not in set(own) and k not in shared
        ]
        errors = []
        if strict and (missing or unexpected):
            errors.append(f'missing keys {missing}, unexpected keys '
                          f'{unexpected}')
        for key in own:
            if key in state_dict:
                value = state_dict[key]
                if not isinstance(value, torch.Tensor):
                    errors.append(f'{key} is a {type(value).__name__}, '
                                  'not a tensor')
                elif value.shape != targets[key].shape:
                    errors.append(f'{key} has shape {tuple(value.shape)}, '
                                  f'expected {tuple(targets[key].shape)}')
        if errors:
            raise RuntimeError(
                f'Error(s) in loading state_dict for {type(self).__name__}: '
                + '; '.join(errors))
        with torch.no_grad():
            for key in own:
                if key in state_dict:
                    targets[key].copy_(state_dict[key])
        return _IncompatibleKeys(missing, unexpected)
