"""Skip optimizer updates whose loss or gradient is not finite.

:func:`guard_optim_wrapper` wraps one optim wrapper's ``update_params`` (the
call every model's ``train_step`` makes) on the instance, so it works for
``OptimWrapper``, ``AmpOptimWrapper`` and their subclasses alike:

* loss NaN/Inf (on any process): no backward, no step; the gradients are
  zeroed;
* a gradient NaN/Inf, checked just before the step (so after the
  gradients were averaged over processes): no step; gradients zeroed;
* with a loss scaler (AMP), the scaler itself skips overflowing steps; a
  step it skipped (its scale dropped) is counted the same way.

Each skip is logged (one line) and counted in a :class:`SkipCounter`;
after ``max_consecutive`` skips in a row of one optimizer the run stops with
:class:`NonFiniteTrainingError`, and so does a run whose optimizer skipped
every update it was given (:meth:`SkipCounter.check_trained`).
"""
import logging
from typing import Callable, Dict, List, Optional

import torch
from mmengine.logging import print_log

ReportFn = Callable[[str, str, List[str]], None]


class NonFiniteTrainingError(RuntimeError):
    """Too many updates in a row had a non-finite loss or gradient."""


def _any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on any process (a collective when
    distributed, so every process takes the same branch)."""
    if not (torch.distributed.is_available()
            and torch.distributed.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)


def non_finite_grads(params: List[torch.Tensor],
                     limit: int = 5) -> List[str]:
    """Indices (as ``'param[i]'``) of up to ``limit`` parameters whose
    gradient holds NaN/Inf; one device sync when all are finite."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return []
    norms = torch.stack([g.detach().float().norm() for g in grads])
    if bool(torch.isfinite(norms).all()):
        return []
    bad = (~torch.isfinite(norms)).nonzero().flatten().tolist()
    return [f'param[{i}] {tuple(grads[i].shape)}' for i in bad[:limit]]


def _params(wrapper) -> List[torch.Tensor]:
    return [p for group in wrapper.optimizer.param_groups
            for p in group['params']]


class SkipCounter:
    """Counts skipped updates per optimizer; raises after too many in a
    row.

    Args:
        max_consecutive: the limit of skips in a row of one optimizer.
        hint: appended to the error message (what to do).
    """

    def __init__(self, max_consecutive: int, hint: str = '') -> None:
        if int(max_consecutive) < 1:
            raise ValueError(
                f'max_consecutive must be >= 1, got {max_consecutive}')
        self.max_consecutive = int(max_consecutive)
        self.hint = hint
        self.total: Dict[str, int] = {}
        self.updates: Dict[str, int] = {}
        self.in_a_row: Dict[str, int] = {}
        self.skipped_now: List[str] = []

    def ok(self, name: str) -> None:
        self.in_a_row[name] = 0
        self.updates[name] = self.updates.get(name, 0) + 1

    def untrained(self) -> List[str]:
        """Optimizers that skipped every update so far (at least one)."""
        return sorted(name for name, n in self.total.items()
                      if n > 0 and self.updates.get(name, 0) == 0)

    def check_trained(self, what: str) -> None:
        """Raise :class:`NonFiniteTrainingError` when an optimizer skipped
        every update it was given (``what``: the action refused, e.g. 'not
        writing checkpoint epoch_1.pth')."""
        bad = self.untrained()
        if bad:
            counts = ', '.join(f"'{n}' ({self.total[n]} skipped, none "
                               'applied)' for n in bad)
            raise NonFiniteTrainingError(
                f'every update of optimizer {counts} had a non-finite loss '
                f'or gradient, so its weights are untrained; {what}. ' +
                self.hint)

    def summary(self) -> str:
        """One line: skipped and applied updates per optimizer."""
        names = sorted(set(self.total) | set(self.updates))
        return '; '.join(f"'{n}': {self.total.get(n, 0)} skipped, "
                         f'{self.updates.get(n, 0)} applied' for n in names)

    def skip(self, name: str, what: str, details: List[str]) -> None:
        self.total[name] = self.total.get(name, 0) + 1
        self.in_a_row[name] = self.in_a_row.get(name, 0) + 1
        self.skipped_now.append(f'{name}: {what}')
        print_log(f"skipped the update of optimizer '{name}': non-finite "
                  f'{what}' + (f' ({", ".join(details)})' if details else '') +
                  f'; {self.in_a_row[name]} in a row, {self.total[name]} in '
                  'all', logger='current', level=logging.WARNING)
        if self.in_a_row[name] >= self.max_consecutive:
            raise NonFiniteTrainingError(
                f"{self.in_a_row[name]} updates in a row of optimizer "
                f"'{name}' were skipped (last: non-finite {what}); the "
                'weights were not changed by them. ' + self.hint)


def _count_as_stepped(wrapper) -> None:
    """A skipped update stands for the step the LR schedulers wait for:
    MMEngine's schedulers (built on the optim wrapper or its optimizer)
    warn (``UserWarning``) when they step before it ever stepped, as after
    a skipped first update."""
    for target in (wrapper, wrapper.optimizer):
        if getattr(target, '_global_step', 0) < 0:
            target._global_step = 0


def guard_optim_wrapper(wrapper, name: str, counter: SkipCounter) -> None:
    """Make ``wrapper.update_params`` skip non-finite updates (in place;
    idempotent)."""
    if getattr(wrapper, '_decq_guarded', False):
        return
    scaler = getattr(wrapper, 'loss_scaler', None)

    def update_params(loss: torch.Tensor,
                      step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        step_kwargs = step_kwargs or {}
        zero_kwargs = zero_kwargs or {}
        bad_loss = not bool(torch.isfinite(loss.detach()).all())
        if _any_rank(bad_loss, loss.device):
            wrapper.zero_grad(**zero_kwargs)
            _count_as_stepped(wrapper)
            counter.skip(name, 'loss', [f'loss={loss.detach().float()}']
                         if bad_loss else ['on another process'])
            return
        wrapper.backward(wrapper.scale_loss(loss))
        if not wrapper.should_update():
            return
        if scaler is None:
            bad = non_finite_grads(_params(wrapper))
            if _any_rank(bool(bad), loss.device):
                wrapper.zero_grad(**zero_kwargs)
                _count_as_stepped(wrapper)
                counter.skip(name, 'gradient', bad or ['on another process'])
                return
            wrapper.step(**step_kwargs)
        else:
            before = float(scaler.get_scale())
            wrapper.step(**step_kwargs)
            if float(scaler.get_scale()) < before:
                wrapper.zero_grad(**zero_kwargs)
                counter.skip(name, 'gradient (the loss scaler skipped the '
                             'step and lowered its scale)', [])
                return
        wrapper.zero_grad(**zero_kwargs)
        counter.ok(name)

    wrapper.update_params = update_params
    wrapper._decq_guarded = True
