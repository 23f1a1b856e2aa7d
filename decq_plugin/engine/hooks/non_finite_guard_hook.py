"""The hook that puts :mod:`decq_plugin.engine.non_finite` on every
optimizer of a run and reports what it skipped."""
import math
from typing import Dict, Optional

from mmengine.hooks import Hook
from mmengine.optim import OptimWrapperDict

from decq_plugin.registry import HOOKS
from ..non_finite import SkipCounter, guard_optim_wrapper

COUNT_KEY = 'nonfinite_skips'
#: message-hub key: updates applied per optimizer (survives a resume).
UPDATES_KEY = 'nonfinite_guard_updates'


@HOOKS.register_module()
class NonFiniteGuardHook(Hook):
    """Skip every update whose loss or gradient is NaN/Inf (all optimizers:
    stage 1's tokenizer and discriminator, stage 2's denoiser), log and
    count it (``train/nonfinite_skips`` in the log; the total survives a
    resume), and stop with ``NonFiniteTrainingError`` after
    ``max_consecutive`` skips in a row of one optimizer, or at the end of
    training (and before each checkpoint, see ``ResumableCheckpointHook``)
    when an optimizer skipped every update it was given. Each skip is one
    log line; each epoch with skips and the run end log a summary.

    The NaN/Inf terms of a skipped iteration's outputs are left out of the
    logged scalars (this hook runs just before MMEngine's
    ``RuntimeInfoHook`` pushes them to the message hub), so the smoothed
    ``loss`` of the following log lines stays finite;
    ``nonfinite_skips`` counts the skipped updates.

    Works with and without AMP (see :func:`guard_optim_wrapper`). Enabled
    in ``configs/_base_/default_runtime.py`` as
    ``default_hooks.non_finite``.

    Args:
        max_consecutive: skips in a row that stop the run.
    """

    # Just above RuntimeInfoHook (VERY_HIGH, 10): its after_train_iter
    # logs the outputs this hook cleans.
    priority = 9

    def __init__(self, max_consecutive: int = 20) -> None:
        self.counter = SkipCounter(
            max_consecutive,
            hint='Look for bad data (NaN/Inf pixels or latents; '
            '`tools/extract_latents.py --verify` checks latent shards), '
            'lower the learning rate, then resume from the last checkpoint '
            '(tools/train.py CONFIG --resume); the limit is the config key '
            f'default_hooks.non_finite.max_consecutive={max_consecutive}.')
        self._epoch_total: Dict[str, int] = {}

    def before_train(self, runner) -> None:
        wrappers = runner.optim_wrapper
        if isinstance(wrappers, OptimWrapperDict):
            items = list(wrappers.items())
        else:
            items = [('optim_wrapper', wrappers)]
        for name, wrapper in items:
            guard_optim_wrapper(wrapper, name, self.counter)
        for key, counts in ((COUNT_KEY, self.counter.total),
                            (UPDATES_KEY, self.counter.updates)):
            stored = runner.message_hub.get_info(key)
            if isinstance(stored, dict):
                counts.update({str(k): int(v) for k, v in stored.items()})
        if self.counter.total and UPDATES_KEY not in \
                runner.message_hub.runtime_info:
            # Resumed from a checkpoint that did not count applied updates.
            for name in self.counter.total:
                self.counter.updates.setdefault(name, 1)
        self._epoch_total = dict(self.counter.total)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        self.counter.skipped_now = []

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        total = sum(self.counter.total.values())
        runner.message_hub.update_info(COUNT_KEY, dict(self.counter.total))
        runner.message_hub.update_info(UPDATES_KEY,
                                       dict(self.counter.updates))
        runner.message_hub.update_scalar(f'train/{COUNT_KEY}', total)
        if self.counter.skipped_now and outputs:
            bad = [k for k, v in outputs.items() if _not_finite(v)]
            if bad:
                runner.logger.warning(
                    f'iteration {runner.iter + 1}: non-finite terms {bad} '
                    '(not logged: they would make the smoothed values NaN)')
                for key in bad:  # RuntimeInfoHook logs what is left
                    outputs.pop(key)

    def after_train_epoch(self, runner) -> None:
        if self.counter.total != self._epoch_total:
            runner.logger.warning(
                f'epoch {runner.epoch + 1}: non-finite updates skipped; '
                f'so far {self.counter.summary()}')
            self._epoch_total = dict(self.counter.total)

    def after_train(self, runner) -> None:
        if self.counter.total:
            runner.logger.warning('non-finite updates skipped in this run: '
                                  + self.counter.summary())
        self.counter.check_trained('the run stops with an error')


def _not_finite(value) -> bool:
    if hasattr(value, 'detach'):
        value = value.detach()
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError, RuntimeError):  # not a scalar
        return False
