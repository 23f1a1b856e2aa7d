"""Checkpoints that a kill at any moment cannot spoil, and a resume that
continues exactly where the saved run stopped.

:class:`ResumableCheckpointHook` is MMEngine's ``CheckpointHook`` with:

* each checkpoint written to ``NAME.partial``, flushed, then renamed, and
  ``last_checkpoint`` replaced atomically after it; with ``max_keep_ckpts``
  the old checkpoints are deleted only after the new one is in place (a
  deletion a kill prevented is done when the run resumes);
* at the start of training, what killed runs left behind is removed
  (``last_checkpoint.tmp<PID>``, ``*.pth.partial``);
* no checkpoint written when the model, its EMA or the optimizer state
  holds NaN/Inf (the run stops with :class:`NonFiniteStateError` naming
  the tensors);
* the random states of every process saved (``checkpoint['random_states']``,
  one per rank) and, on resume, restored just before the first epoch (or
  iteration) that follows, so the resumed run draws the same numbers (the
  data loader's own draw lined up, see
  :mod:`~decq_plugin.engine.dataloader_rng`);
* validation during training leaves the random states as it found them
  (the resumed run does not repeat the validation that followed the save);
* a ``load_from`` checkpoint that fits the model only in part is an error
  unless the config sets ``allow_partial_load_from = True``.

Auto-resume (``--resume`` without a file) picks the checkpoint with
:func:`~decq_plugin.engine.checkpoint_files.find_resume_checkpoint`.
"""
import logging
import os
import os.path as osp
from typing import List, Optional

from mmengine.dist import get_rank, get_world_size, is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop
from mmengine.runner.checkpoint import get_state_dict

from decq_plugin.registry import HOOKS
from .. import dataloader_rng, random_state
from ..checkpoint import check_state_fit
from ..checkpoint_errors import StateDictMismatchError
from ..checkpoint_files import (LAST_CHECKPOINT, atomic_write_text,
                                non_finite_entries, publish,
                                remove_stale_temporaries)
from ..non_finite import SkipCounter
from ..process_count import check_process_count

PARTIAL_SUFFIX = '.partial'
ALLOW_PARTIAL_KEY = 'allow_partial_load_from'
#: message-hub key: steps of old checkpoints to delete once the new one is
#: in place (saved with it, so a resume deletes what a kill left).
PENDING_DELETE_KEY = 'ckpt_pending_delete'


class NonFiniteStateError(RuntimeError):
    """The training state holds NaN/Inf; no checkpoint was written."""


@HOOKS.register_module()
class ResumableCheckpointHook(CheckpointHook):
    """``CheckpointHook`` for runs that must survive a kill (see module).

    Args:
        save_random_states: save and restore every process's RNG states.
        check_finite: refuse to save a state holding NaN/Inf.
        *args, **kwargs: as for ``CheckpointHook``.
    """

    def __init__(self, *args, save_random_states: bool = True,
                 check_finite: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.save_random_states = bool(save_random_states)
        self.check_finite = bool(check_finite)
        self._states_to_save: Optional[list] = None
        self._state_to_restore: Optional[dict] = None
        self._val_state: Optional[dict] = None

    # -- saving ---------------------------------------------------------------
    def _non_finite_state(self, runner) -> List[str]:
        bad = non_finite_entries(get_state_dict(runner.model), 'state_dict')
        for hook in runner.hooks:
            ema = getattr(hook, 'ema_model', None)
            if ema is not None:
                bad += non_finite_entries(ema.module.state_dict(),
                                          'ema_state_dict')
        if runner.optim_wrapper is not None and hasattr(
                runner.optim_wrapper, 'state_dict'):
            bad += non_finite_entries(runner.optim_wrapper.state_dict(),
                                      'optimizer')
        return bad

    def _check_trained(self, runner, name: str) -> None:
        """No checkpoint of weights that no update ever reached (every
        update skipped by ``NonFiniteGuardHook``)."""
        for hook in runner.hooks:
            counter = getattr(hook, 'counter', None)
            if isinstance(counter, SkipCounter):
                counter.check_trained(
                    f'not writing checkpoint {name} in {self.out_dir}')

    def _save_checkpoint_with_step(self, runner, step, meta):
        self._check_trained(runner, self.filename_tmpl.format(step))
        if self.check_finite:
            bad = self._non_finite_state(runner)
            if bad:
                if self.last_ckpt:
                    last = (f'The last checkpoint written, {self.last_ckpt},'
                            ' is finite: resume from it (tools/train.py '
                            'CONFIG --resume)')
                else:
                    last = ('No checkpoint was written before in this run: '
                            'start it again')
                raise NonFiniteStateError(
                    f'not saving checkpoint {self.filename_tmpl.format(step)}'
                    f' in {self.out_dir}: {len(bad)} tensors hold NaN/Inf, '
                    f'e.g. {bad[:5]}. {last}, after looking for bad data or '
                    'lowering the learning rate. A non-finite loss or '
                    'gradient is skipped by NonFiniteGuardHook '
                    '(default_hooks.non_finite); is it in the config?')
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        if self.save_random_states:
            self._states_to_save = random_state.gather()
        dropped = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                dropped.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        runner.message_hub.update_info(PENDING_DELETE_KEY, list(dropped))
        name = self.filename_tmpl.format(step)
        final = osp.join(self.out_dir, name)
        self.last_ckpt = final
        runner.message_hub.update_info('last_ckpt', final)
        try:
            runner.save_checkpoint(
                self.out_dir, name + PARTIAL_SUFFIX, self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler, meta=meta,
                by_epoch=self.by_epoch, backend_args=self.backend_args,
                **self.args)
        finally:
            self._states_to_save = None
        if not is_main_process():
            return
        publish(final + PARTIAL_SUFFIX, final)
        atomic_write_text(osp.join(runner.work_dir, LAST_CHECKPOINT), final)
        self._delete_old(runner, dropped)

    def _delete_old(self, runner, steps: List[int]) -> None:
        """Delete the checkpoints of ``steps`` (not kept ones)."""
        for old in steps:  # only now that the new one is complete
            path = osp.join(self.out_dir, self.filename_tmpl.format(old))
            if old not in self.keep_ckpt_ids and osp.isfile(path):
                os.remove(path)
        runner.message_hub.update_info(PENDING_DELETE_KEY, [])

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not (is_main_process() and
                isinstance(self.file_backend, LocalBackend)):
            return
        remove_stale_temporaries(runner.work_dir, self.out_dir)
        pending = runner.message_hub.get_info(PENDING_DELETE_KEY) or []
        if self.max_keep_ckpts > 0 and pending:
            self._delete_old(runner, [int(s) for s in pending])

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._states_to_save is not None:
            checkpoint['random_states'] = self._states_to_save

    # -- loading --------------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if runner._resume:
            self._take_random_state(runner, checkpoint)
        else:
            self._check_load_from(runner, checkpoint)

    def _take_random_state(self, runner, checkpoint: dict) -> None:
        """Keep this rank's saved random state for the next epoch (or
        iteration); another process count than the saved run's is refused
        unless the config opts in (:mod:`..process_count`)."""
        states = checkpoint.get('random_states')
        if isinstance(states, list) and states:  # one per saved process
            check_process_count(runner.cfg, len(states), get_world_size())
        if not self.save_random_states:
            return
        if not isinstance(states, list) or not states:
            print_log('the resumed checkpoint holds no random states (not '
                      'written by ResumableCheckpointHook): the run goes on, '
                      'but not bit-identically to an uninterrupted one',
                      logger='current', level=logging.WARNING)
            return
        # Another process count (allowed above): rank r takes r mod N.
        self._state_to_restore = states[get_rank() % len(states)]
        # Validate now, so a bad file fails at load, not an epoch later.
        random_state._check(self._state_to_restore,
                            "checkpoint['random_states']")

    def _check_load_from(self, runner, checkpoint: dict) -> None:
        if runner.cfg.get(ALLOW_PARTIAL_KEY, False):
            return
        state = checkpoint.get('state_dict', checkpoint)
        if not isinstance(state, dict):
            return
        found = {k[len('module.'):] if k.startswith('module.') else k: v
                 for k, v in state.items()}
        try:
            check_state_fit(runner.model, get_state_dict(runner.model),
                            found, runner._load_from, strict=True)
        except StateDictMismatchError as err:
            raise StateDictMismatchError(
                f'load_from: {err}\n  load a checkpoint of this model, or '
                f'set {ALLOW_PARTIAL_KEY} = True in the config (or '
                f'--cfg-options {ALLOW_PARTIAL_KEY}=True) to load the keys '
                'that fit') from None

    # -- restoring at the right moment ----------------------------------------
    def _restore_pending(self) -> None:
        state, self._state_to_restore = self._state_to_restore, None
        random_state.restore(state, "checkpoint['random_states']")

    def before_train_epoch(self, runner) -> None:
        # Before the epoch's data loader iterator draws its base seed.
        if self._state_to_restore is not None and not isinstance(
                runner.train_loop, IterBasedTrainLoop):
            dataloader_rng.settle_before_restore(runner.train_dataloader)
            self._restore_pending()

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        # Iteration-based loops skip the consumed batches first.
        if self._state_to_restore is not None:
            self._restore_pending()
            dataloader_rng.replay_after_restore(runner.train_dataloader,
                                                runner.iter)
        super().before_train_iter(runner, batch_idx, data_batch)

    def before_val(self, runner) -> None:
        self._val_state = random_state.capture()

    def after_val(self, runner) -> None:
        if self._val_state is not None:
            random_state.restore(self._val_state)
            self._val_state = None
