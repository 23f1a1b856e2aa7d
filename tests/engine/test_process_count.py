"""A resume on another process count is refused unless the config opts in
(the two-process runs through the tools are in
tests/recipes/test_multinode.py)."""
import pytest
import torch
from mmengine.config import Config

from decq_plugin.engine.process_count import (ALLOW_COUNT_CHANGE_KEY,
                                              ProcessCountChangeError,
                                              check_process_count)

from test_resumable_checkpoint_hook import _runner


def _as_if_two_processes(path) -> None:
    """Rewrite a one-process checkpoint as a two-process run writes it."""
    state = torch.load(path, weights_only=True)
    state['random_states'] = state['random_states'] * 2
    torch.save(state, path)


def test_resume_of_another_process_count_is_refused(tmp_path):
    _runner(tmp_path, epochs=1).train()
    ckpt = tmp_path / 'epoch_1.pth'
    _as_if_two_processes(ckpt)
    runner = _runner(tmp_path, epochs=2, resume=True, load_from=str(ckpt))
    with pytest.raises(ProcessCountChangeError) as err:
        runner.train()
    message = str(err.value)
    assert '2 process(es), this run has 1' in message
    assert 'tools/dist_train.sh CONFIG 2 --resume' in message
    assert f'--cfg-options {ALLOW_COUNT_CHANGE_KEY}=True' in message
    assert 'load_from=CHECKPOINT' in message


def test_same_count_passes_and_opt_in_logs():
    check_process_count(Config(), 2, 2)
    with pytest.raises(ProcessCountChangeError, match='1 process'):
        check_process_count(Config(), 1, 2)
    check_process_count(Config({ALLOW_COUNT_CHANGE_KEY: True}), 1, 2)
