"""ResumableCheckpointHook and NonFiniteGuardHook on a tiny runner (the
bit-identical resume of the real configs is tested in tests/faults)."""
import os
import os.path as osp

import numpy as np
import pytest
import torch

from decq_plugin.engine.checkpoint_files import (find_resume_checkpoint,
                                                 is_complete_checkpoint)
from decq_plugin.engine.hooks.resumable_checkpoint_hook import \
    NonFiniteStateError
from decq_plugin.engine.non_finite import NonFiniteTrainingError

from toy_runner import noisy_runner


def _runner(work_dir, epochs=3, resume=False, load_from=None, keep=1,
            nan_at=-1, max_consecutive=20, **extra):
    return noisy_runner(
        work_dir, name='resumable', global_targets=True, nan_at=nan_at,
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        checkpoint=dict(type='ResumableCheckpointHook', interval=1,
                        max_keep_ckpts=keep),
        non_finite=dict(type='NonFiniteGuardHook',
                        max_consecutive=max_consecutive),
        resume=resume, load_from=load_from, **extra)


def _weights(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_old_checkpoints_go_only_after_the_new_one_is_complete(tmp_path):
    _runner(tmp_path, keep=1).train()
    names = sorted(os.listdir(tmp_path))
    assert 'epoch_3.pth' in names and 'epoch_2.pth' not in names
    assert not [n for n in names if n.endswith(('.partial', '.tmp'))]
    assert open(tmp_path / 'last_checkpoint').read() == str(
        tmp_path / 'epoch_3.pth')


def test_auto_resume_falls_back_to_the_newest_complete(tmp_path):
    _runner(tmp_path, keep=-1).train()
    (tmp_path / 'last_checkpoint').write_text('')  # killed mid-write (old)
    assert find_resume_checkpoint(str(tmp_path)) == str(
        tmp_path / 'epoch_3.pth')
    data = (tmp_path / 'epoch_3.pth').read_bytes()
    (tmp_path / 'epoch_3.pth').write_bytes(data[:len(data) // 2])
    assert not is_complete_checkpoint(str(tmp_path / 'epoch_3.pth'))
    assert find_resume_checkpoint(str(tmp_path)) == str(
        tmp_path / 'epoch_2.pth')
    (tmp_path / 'last_checkpoint').unlink()
    assert find_resume_checkpoint(str(tmp_path)) == str(
        tmp_path / 'epoch_2.pth')


def test_non_finite_loss_is_skipped_and_counted(tmp_path):
    runner = _runner(tmp_path, epochs=1, nan_at=2)
    runner.train()
    info = runner.message_hub.get_info('nonfinite_skips')
    assert info == {'optim_wrapper': 1}
    assert all(bool(torch.isfinite(v).all())
               for v in runner.model.state_dict().values())


def test_non_finite_in_a_row_stops_the_run(tmp_path):
    runner = _runner(tmp_path, epochs=1, nan_at=0, max_consecutive=3)
    with pytest.raises(NonFiniteTrainingError, match='3 updates in a row'):
        runner.train()


def test_non_finite_weights_are_never_saved(tmp_path):
    runner = _runner(tmp_path, epochs=2)
    runner.train()  # writes epoch_1, epoch_2
    with torch.no_grad():
        runner.model.net[0].weight[0, 0] = float('inf')
    hook = [h for h in runner.hooks if type(h).__name__ ==
            'ResumableCheckpointHook'][0]
    with pytest.raises(NonFiniteStateError, match='net.0.weight'):
        hook._save_checkpoint_with_step(runner, 3, dict(epoch=3, iter=12))
    assert not osp.exists(tmp_path / 'epoch_3.pth')
    assert open(tmp_path / 'last_checkpoint').read().endswith('epoch_2.pth')


def test_auto_resume_prefers_a_newer_complete_checkpoint(tmp_path):
    """Killed after epoch_3.pth was renamed into place, before
    ``last_checkpoint`` named it: resume from epoch 3, not epoch 2."""
    _runner(tmp_path, keep=-1).train()
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_2.pth'))
    assert find_resume_checkpoint(str(tmp_path)) == str(
        tmp_path / 'epoch_3.pth')
    # A newer file that is incomplete is passed over.
    data = (tmp_path / 'epoch_3.pth').read_bytes()
    (tmp_path / 'epoch_3.pth').write_bytes(data[:len(data) // 2])
    assert find_resume_checkpoint(str(tmp_path)) == str(
        tmp_path / 'epoch_2.pth')


class _Killed(BaseException):
    """Stands for a SIGKILL at a chosen line."""


def test_leftovers_of_a_kill_are_removed_on_resume(tmp_path, monkeypatch):
    from decq_plugin.engine.hooks import resumable_checkpoint_hook as hook

    def remove_killed(path, *args, **kwargs):
        raise _Killed(path)
    # max_keep_ckpts=1, killed between the rename of epoch_2.pth and the
    # deletion of epoch_1.pth.
    monkeypatch.setattr(hook.os, 'remove', remove_killed)
    with pytest.raises(_Killed):
        _runner(tmp_path, epochs=2, keep=1).train()
    monkeypatch.undo()
    assert {'epoch_1.pth', 'epoch_2.pth'} <= set(os.listdir(tmp_path))
    dead_pid = 2**22 + 12345  # above Linux's pid_max: never alive
    for name in (f'last_checkpoint.tmp{dead_pid}', 'epoch_7.pth.partial'):
        (tmp_path / name).write_text('left by a killed run')
    alive = tmp_path / f'last_checkpoint.tmp{os.getppid()}'
    alive.write_text('another live process is writing it')
    _runner(tmp_path, epochs=3, keep=1, resume=True).train()
    names = sorted(os.listdir(tmp_path))
    assert [n for n in names if '.pth' in n] == ['epoch_3.pth']
    assert not [n for n in names if str(dead_pid) in n]
    assert alive.exists()


def test_a_run_that_skipped_every_update_fails_without_a_checkpoint(
        tmp_path):
    runner = _runner(tmp_path, epochs=2, nan_at=0, max_consecutive=100)
    with pytest.raises(NonFiniteTrainingError,
                       match="optimizer 'optim_wrapper' .4 skipped, none "
                       'applied.*untrained; not writing checkpoint '
                       'epoch_1.pth'):
        runner.train()
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.pth')]


def test_skips_are_log_lines_with_a_summary_not_warnings(tmp_path):
    import glob
    import warnings
    # The first update skipped, with an LR schedule stepping after it.
    runner = _runner(tmp_path, epochs=1, nan_at=1, param_scheduler=dict(
        type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        runner.train()
    assert [str(w.message) for w in caught
            if issubclass(w.category, UserWarning)] == []
    log, = glob.glob(str(tmp_path / '*' / '*.log'))
    text = open(log).read()
    assert text.count("skipped the update of optimizer 'optim_wrapper'") == 1
    assert ("non-finite updates skipped in this run: 'optim_wrapper': "
            '1 skipped, 3 applied') in text


def test_non_finite_state_before_any_checkpoint_says_so(tmp_path):
    runner = _runner(tmp_path, epochs=1)
    runner.train()
    hook = [h for h in runner.hooks if type(h).__name__ ==
            'ResumableCheckpointHook'][0]
    hook.last_ckpt = None  # as in a run that has not saved yet
    with torch.no_grad():
        runner.model.net[0].weight[0, 0] = float('nan')
    with pytest.raises(NonFiniteStateError) as err:
        hook._save_checkpoint_with_step(runner, 2, dict(epoch=2, iter=8))
    assert 'None' not in str(err.value)
    assert 'No checkpoint was written before' in str(err.value)


def test_a_project_default_hook_set_to_none_is_dropped():
    from mmengine.config import Config

    from decq_plugin.utils.launch import drop_disabled_hooks
    cfg = Config(dict(default_hooks=dict(
        non_finite=None, timer=None, logger=dict(type='LoggerHook'))))
    drop_disabled_hooks(cfg)
    assert dict(cfg.default_hooks) == dict(
        timer=None, logger=dict(type='LoggerHook'))


def test_auto_resume_ignores_a_later_step_of_an_earlier_run(tmp_path):
    """epoch_3.pth left by an earlier, longer run in the same folder is
    older than the file last_checkpoint names: that one is resumed."""
    _runner(tmp_path, keep=-1).train()
    old = os.path.getmtime(tmp_path / 'epoch_2.pth') - 100
    os.utime(tmp_path / 'epoch_3.pth', (old, old))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_2.pth'))
    assert find_resume_checkpoint(str(tmp_path)) == str(
        tmp_path / 'epoch_2.pth')


def test_a_skipped_nan_loss_leaves_the_smoothed_loss_finite(tmp_path):
    """The NaN loss of a skipped step is not logged: the windowed mean of
    the next log lines stays finite; nonfinite_skips shows the count."""
    runner = _runner(tmp_path, epochs=1, nan_at=2)
    runner.train()
    losses = runner.message_hub.log_scalars['train/loss'].data[0]
    assert len(losses) == 3 and np.isfinite(losses).all()
    tag, _ = runner.log_processor.get_log_after_iter(runner, 3, 'train')
    assert np.isfinite(tag['loss'])
    assert tag['nonfinite_skips'] == 1
