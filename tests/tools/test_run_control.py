"""Run control a user sees: resuming a finished run says so and how to
extend it; a shorter (or longer) ``train_cfg.max_epochs`` moves the
learning-rate schedule with it."""
import os.path as osp
from pathlib import Path

import pytest
import torch

from decq_plugin.engine.finished_run import (checkpoint_progress,
                                             finished_run_message)
from decq_plugin.utils.launch import load_config
from decq_plugin.utils.schedule import fit_schedule_to_max_epochs
from tiny_models import load_tool

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = str(ROOT / 'configs/decq/'
                'decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py')
LDM = str(ROOT / 'configs/ldm/'
          'ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_8xb128-80e_in1k-256.py')


def _tool(name: str):
    return load_tool(name, f'decq_tool_{name}_rc')


@pytest.fixture
def toy_config(tmp_path, monkeypatch):
    from test_cli import TOY_CONFIG, TOY_PARTS
    from mmengine.registry import DefaultScope
    (tmp_path / 'decq_cli_toy_parts.py').write_text(TOY_PARTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    before = set(DefaultScope._instance_dict)
    path = tmp_path / 'toy_regression.py'
    # Checkpoints as the shipped configs write them (plain data).
    path.write_text(TOY_CONFIG +
                    "custom_hooks = [dict(type='SafeCheckpointHook')]\n")
    yield str(path)
    for name in set(DefaultScope._instance_dict) - before:
        DefaultScope._instance_dict.pop(name)


def test_resuming_a_finished_run_says_so(toy_config, tmp_path, capsys):
    train = _tool('train')
    work = str(tmp_path / 'work')
    train.main([toy_config, '--work-dir', work])
    assert osp.isfile(osp.join(work, 'iter_2.pth'))
    assert checkpoint_progress(osp.join(work, 'iter_2.pth')) == (0, 2)
    capsys.readouterr()
    train.main([toy_config, '--work-dir', work, '--resume'])
    out = capsys.readouterr().out
    assert 'the run is finished (iteration 2 of train_cfg.max_iters=2)' in out
    assert '--resume --cfg-options train_cfg.max_iters=4' in out
    # ... and the advice works.
    train.main([toy_config, '--work-dir', work, '--resume', '--cfg-options',
                'train_cfg.max_iters=4'])
    assert checkpoint_progress(osp.join(work, 'iter_4.pth')) == (0, 4)


def test_unfinished_or_fresh_runs_are_not_stopped(tmp_path):
    path = str(tmp_path / 'epoch_3.pth')
    torch.save({'meta': {'epoch': 3, 'iter': 30}, 'state_dict': {}}, path)
    cfg = dict(resume=True, load_from=path, work_dir=str(tmp_path),
               train_cfg=dict(max_epochs=16))
    assert finished_run_message(cfg, 'c.py') is None
    cfg['train_cfg']['max_epochs'] = 3
    assert 'epoch 3 of train_cfg.max_epochs=3' in \
        finished_run_message(cfg, 'c.py')
    cfg['resume'] = False  # load_from only: weights, a new run
    assert finished_run_message(cfg, 'c.py') is None


def test_shorter_run_shortens_the_cosine(capsys):
    cfg = load_config(TOKENIZER, {'train_cfg.max_epochs': 4})
    warmup, cosine = cfg.param_scheduler
    assert (warmup.begin, warmup.end) == (0, 1)
    assert (cosine.begin, cosine.end, cosine.T_max) == (1, 4, 3)
    assert 'CosineAnnealingLR): epochs [1, 16) -> [1, 4)' in \
        capsys.readouterr().err
    longer = load_config(TOKENIZER, {'train_cfg.max_epochs': 32})
    assert (longer.param_scheduler[1].end,
            longer.param_scheduler[1].T_max) == (32, 31)


def test_stage2_halves_follow_too():
    cfg = load_config(LDM, {'train_cfg.max_epochs': 8})
    constant, linear = cfg.param_scheduler
    assert (constant.begin, constant.end) == (0, 4)
    assert (linear.begin, linear.end) == (4, 8)


def test_explicit_schedule_is_left_alone():
    cfg = load_config(TOKENIZER, {'train_cfg.max_epochs': 4,
                                  'param_scheduler.1.end': 10})
    assert cfg.param_scheduler[1].end == 10
    assert cfg.param_scheduler[1].T_max == 15


def test_one_epoch_drops_the_phase_that_never_starts():
    cfg = dict(train_cfg=dict(max_epochs=1), param_scheduler=[
        dict(type='LinearLR', begin=0, end=1),
        dict(type='CosineAnnealingLR', T_max=15, begin=1, end=16),
        dict(type='X', by_epoch=False, begin=0, end=16)])
    changes = fit_schedule_to_max_epochs(cfg, 16)
    assert [s['type'] for s in cfg['param_scheduler']] == ['LinearLR', 'X']
    assert cfg['param_scheduler'][1]['end'] == 16  # iteration-based
    assert changes == ['param_scheduler[1] (CosineAnnealingLR): dropped '
                       '(epochs [1, 16) leave nothing of a 1-epoch run)']


def test_stage2_in_one_epoch_keeps_a_valid_schedule():
    """The constant half of a 40-epoch schedule is empty at 1 epoch: it is
    dropped, not kept as [0, 0) (which MMEngine refuses)."""
    cfg = load_config(LDM, {'train_cfg.max_epochs': 1})
    assert [(s.type, s.begin, s.end) for s in cfg.param_scheduler] == [
        ('LinearLR', 0, 1)]


def _with_val_loop(train_cfg: str) -> str:
    return ("val_dataloader = _loader\nval_cfg = dict()\n"
            "val_evaluator = dict(type='DecqCliToyMSE')\n"
            f'train_cfg = {train_cfg}\n')


def test_a_val_interval_past_the_run_is_a_logged_warning(
        toy_config, tmp_path):
    """val_interval > max_epochs: the warning names both values, in the
    run's log; the run still validates (once, at its end) as before."""
    import glob
    path = Path(toy_config)
    path.write_text(path.read_text() + _with_val_loop(
        'dict(by_epoch=True, max_epochs=2, val_interval=5)'))
    work = tmp_path / 'work'
    _tool('train').main([str(path), '--work-dir', str(work)])
    log, = glob.glob(str(work / '*' / '*.log'))
    text = open(log).read()
    assert ('WARNING - train_cfg.val_interval=5 > train_cfg.max_epochs=2'
            in text)
    assert 'Epoch(val) [2]' in text and 'Epoch(val) [1]' not in text


def test_validation_schedule_warning_cases():
    from mmengine.config import Config

    from decq_plugin.utils.launch import validation_schedule_warning

    def warning(train_cfg: dict, val: bool = True):
        loops = dict(val_dataloader=dict(), val_cfg=dict(),
                     val_evaluator=dict()) if val else {}
        return validation_schedule_warning(Config(dict(train_cfg=train_cfg,
                                                       **loops)))

    assert warning(dict(max_epochs=16, val_interval=4)) is None
    assert warning(dict(max_epochs=4, val_interval=4)) is None
    assert warning(dict(max_epochs=2, val_interval=4), val=False) is None
    assert 'val_interval=4 > train_cfg.max_epochs=2' in warning(
        dict(max_epochs=2, val_interval=4))
    assert 'val_interval=1000 > train_cfg.max_iters=10' in warning(
        dict(by_epoch=False, max_iters=10))
    assert 'never validates' in warning(dict(max_epochs=2, val_begin=3))
