"""A run's console is short (no config dump, hook table, MMEngine
deprecation notices, metric-prefix warnings, per-epoch ``Exp name:``, nor
the scheduler-order warning of stage 1's idle discriminator), while the
work dir's log file keeps the config, hook order and experiment name."""
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path


from decq_plugin.utils.quiet_logs import (LogFileOnly, quiet_console,
                                          quiet_known_warnings)

ROOT = Path(__file__).resolve().parents[2]
NOISE = ('Config:', 'Hooks will be executed', 'Exp name:',
         'The prefix is not set', 'FileClient', 'HardDiskBackend',
         'System environment', 'scheduler.step()', 'has no metainfo')


def test_console_drops_what_the_log_file_keeps(tmp_path):
    logger = logging.getLogger(f'quiet-{tmp_path.name}')
    logger.propagate = False
    logger.setLevel(logging.INFO)
    console_path = tmp_path / 'console.txt'
    with open(console_path, 'w') as console_stream:
        console = logging.StreamHandler(console_stream)
        log_file = logging.FileHandler(tmp_path / 'run.log')
        logger.addHandler(console)
        logger.addHandler(log_file)
        quiet_console(logger)
        quiet_console(logger)  # twice: one filter
        assert sum(isinstance(f, LogFileOnly) for f in console.filters) == 1
        assert not log_file.filters
        logger.info('Config:\nmodel = dict()')
        logger.info('Exp name: run_1')
        logger.warning('The prefix is not set in metric class PSNRMetric.')
        logger.warning('Dataset ClassLabelDataset has no metainfo. '
                       '``dataset_meta`` in evaluator ... will be None.')
        logger.info('Epoch(train) [1][8/8] loss: 0.5')
        for handler in (console, log_file):
            handler.flush()
            logger.removeHandler(handler)
        log_file.close()
    shown = console_path.read_text()
    kept = (tmp_path / 'run.log').read_text()
    assert f'environment, config and hook order: {tmp_path}' in shown
    assert 'Epoch(train)' in shown
    assert not any(noise in shown for noise in NOISE)
    assert 'Config:' in kept and 'Exp name: run_1' in kept
    assert 'prefix is not set' in kept


def test_scheduler_warning_filtered_only_with_a_discriminator():
    message = ('Detected call of `scheduler.step()` before '
               '`optimizer.step()`.')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        quiet_known_warnings(False)
        warnings.warn(message, UserWarning)
        quiet_known_warnings(True)
        warnings.warn(message, UserWarning)
        warnings.warn('another warning', UserWarning)
    assert [str(w.message) for w in caught] == [message, 'another warning']


def test_a_tiny_training_run_has_a_short_console(tmp_path):
    work = tmp_path / 'work'
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1',
               PYTHONWARNINGS='default')
    run = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'train.py'),
         str(ROOT / 'configs/demo/decq_tiny_1xb8-16e_demo-64.py'),
         '--work-dir', str(work), '--cfg-options', 'train_cfg.max_epochs=1'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    console = run.stdout + run.stderr
    found = [noise for noise in NOISE if noise in console]
    assert not found, f'{found} on the console:\n{console[-3000:]}'
    assert len(console.splitlines()) < 30, console[-3000:]
    log, = work.glob('*/*.log')
    kept = log.read_text()
    assert f'environment, config and hook order: {log}' in console
    for expected in ('Config:', 'Hooks will be executed', 'Exp name:',
                     'Epoch(train)'):
        assert expected in kept, expected
