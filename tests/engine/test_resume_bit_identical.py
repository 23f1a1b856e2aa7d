"""A toy runner resumed from its own checkpoint ends with the weights of
the uninterrupted run, bit for bit, whichever ran first in the process:
epoch- and iteration-based loops, with and without (persistent) data
loader workers. The model draws from the global RNG at every step (input
noise, dropout), so one extra or missing draw anywhere shows."""
import os
import subprocess
import sys

import pytest
import torch

from toy_runner import noisy_runner


def run(work_dir: str, length: int, by_epoch: bool, workers: int = 0,
        persistent: bool = False, resume: bool = False) -> dict:
    """Train ``length`` epochs (or iterations) in batches of 4 with a
    checkpoint every epoch (every 4 iterations); return the weights."""
    torch.manual_seed(0)  # the same initial weights in every run
    loop = (dict(by_epoch=True, max_epochs=length) if by_epoch else
            dict(by_epoch=False, max_iters=length))
    runner = noisy_runner(
        work_dir, name='bit_identical', train_cfg=loop,
        checkpoint=dict(type='ResumableCheckpointHook', by_epoch=by_epoch,
                        interval=1 if by_epoch else 4),
        workers=workers, persistent=persistent, resume=resume)
    runner.train()
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def uninterrupted_and_resumed(root: str, by_epoch: bool,
                              **loader) -> tuple:
    """(uninterrupted, stopped after 2 of 3 epochs and resumed) weights;
    the uninterrupted run goes first."""
    full = run(f'{root}/full', 3 if by_epoch else 12, by_epoch, **loader)
    run(f'{root}/split', 2 if by_epoch else 8, by_epoch, **loader)
    resumed = run(f'{root}/split', 3 if by_epoch else 12, by_epoch,
                  resume=True, **loader)
    return full, resumed


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize('by_epoch,workers,persistent', [
    (True, 0, False), (True, 1, False), (True, 1, True),
    (False, 0, False), (False, 1, True)])
def test_resumed_run_is_bit_identical(tmp_path, by_epoch, workers,
                                      persistent):
    """Iteration-based runs resume at an epoch end (iteration 8 of 4 an
    epoch): the next epoch's loader iterator drew its seed after the save.
    With persistent workers the loader draws only when first iterated."""
    full, resumed = uninterrupted_and_resumed(
        str(tmp_path), by_epoch, workers=workers, persistent=persistent)
    assert _same(full, resumed)


_FIRST_RUNNER = '''
import sys
sys.path.insert(0, sys.argv[1])
import test_resume_bit_identical as t
full, resumed = t.uninterrupted_and_resumed(sys.argv[2], by_epoch=True,
                                            workers=1, persistent=True)
print('SAME' if t._same(full, resumed) else 'DIFFERENT')
'''


def test_bit_identical_when_the_uninterrupted_run_is_the_first(tmp_path):
    """In a fresh process, so the uninterrupted run is its first runner."""
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    proc = subprocess.run(
        [sys.executable, '-c', _FIRST_RUNNER, os.path.dirname(__file__),
         str(tmp_path)], env=env, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith('SAME'), proc.stderr[-3000:]
