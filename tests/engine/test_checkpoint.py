"""Safe checkpoint saving/loading: resume exactness, refusal of code-running
files, clear errors of ``load_model_weights``."""
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from decq_plugin.engine.checkpoint import (CheckpointError,
                                           CheckpointFormatError,
                                           CheckpointNotFoundError,
                                           SafeCheckpointHook,
                                           StateDictMismatchError,
                                           UnsafeCheckpointError,
                                           load_from_safe_local,
                                           load_model_weights,
                                           make_checkpoint_safe,
                                           safe_load_checkpoint)


def _touch(path):
    """The 'payload' of the crafted checkpoints: creates a marker file."""
    open(path, 'w').close()
    return 0


class _RunsCommand:
    """Unpickling this runs a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


class _CallsFunction:
    """Unpickling this calls :func:`_touch`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (str(self.marker), ))


def _weights_only_plain(path):
    """Load with weights_only=True and no allow-listed globals at all."""
    allowed = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        return torch.load(path, weights_only=True)
    finally:
        torch.serialization.add_safe_globals(allowed)


# ---------------------------------------------------------------- resume
def test_resume_matches_uninterrupted_run(tmp_path, make_runner):
    # 6 batches an epoch: both runs cross an epoch end (sampler reshuffle).
    full = make_runner(tmp_path / 'full', dataset_size=24)
    full.train()
    middle = tmp_path / 'full' / 'iter_6.pth'
    # What was written is plain data: no globals needed at all.
    raw = _weights_only_plain(middle)
    assert isinstance(raw['message_hub']['log_scalars']['train/loss'], dict)

    resumed = make_runner(tmp_path / 'resumed', resume=True,
                          load_from=str(middle), dataset_size=24)
    resumed.train()
    assert resumed.iter == full.iter == 9
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    opt_a = full.optim_wrapper.state_dict()
    opt_b = resumed.optim_wrapper.state_dict()
    assert opt_a['state'].keys() == opt_b['state'].keys()
    assert len(opt_a['state']) == 4  # only the trainable head
    for idx, st in opt_a['state'].items():
        for name, value in st.items():
            assert torch.equal(value, opt_b['state'][idx][name]), name
    assert [g['lr'] for g in opt_a['param_groups']] == \
        [g['lr'] for g in opt_b['param_groups']]
    for s_a, s_b in zip(full.param_schedulers, resumed.param_schedulers):
        assert s_a.last_step == s_b.last_step
    # The message hub came back as real HistoryBuffers with their history.
    loss_a = full.message_hub.get_scalar('train/loss').data
    loss_b = resumed.message_hub.get_scalar('train/loss').data
    np.testing.assert_array_equal(loss_a[0], loss_b[0])
    assert loss_a[1].dtype == loss_b[1].dtype


def test_load_from_loads_weights_without_resuming(tmp_path, make_runner):
    full = make_runner(tmp_path / 'full', max_iters=3)
    full.train()
    ckpt = tmp_path / 'full' / 'iter_3.pth'
    runner = make_runner(tmp_path / 'load', load_from=str(ckpt))
    before = runner.model.head[0].weight.detach().clone()
    runner.load_or_resume()
    assert runner.iter == 0
    assert not torch.equal(before, runner.model.head[0].weight)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, runner.model.state_dict()[k]), k


def test_stock_runner_checkpoint_is_refused(tmp_path, make_runner):
    # Control for the tests above: without the hook's save side, what the
    # runner writes needs globals and the safe loader refuses it.
    make_runner(tmp_path / 'stock', max_iters=3, safe=False).train()
    SafeCheckpointHook()
    runner = make_runner(tmp_path / 'resumed', resume=True,
                         load_from=str(tmp_path / 'stock' / 'iter_3.pth'))
    with pytest.raises(UnsafeCheckpointError, match='SafeCheckpointHook'):
        runner.train()


def test_base_runtime_enables_the_hook():
    cfg = Config.fromfile(
        os.path.join(os.path.dirname(__file__), '..', '..', 'configs',
                     '_base_', 'default_runtime.py'))
    hooks = list(cfg.get('default_hooks', {}).values()) + list(
        cfg.get('custom_hooks', []))
    assert 'SafeCheckpointHook' in [h['type'] for h in hooks if h]


def test_hook_installs_the_safe_loader_idempotently():
    SafeCheckpointHook()
    SafeCheckpointHook()
    for path in ('work_dirs/x/iter_3.pth', '/abs/epoch_1.pth'):
        assert CheckpointLoader._get_checkpoint_loader(path) is \
            load_from_safe_local


# ------------------------------------------------------- crafted files
@pytest.mark.parametrize('fmt', ['torch_zip', 'raw_pickle'])
def test_code_running_checkpoint_is_refused(tmp_path, fmt):
    marker = tmp_path / 'marker'
    path = tmp_path / 'evil.pth'
    payload = {'state_dict': {'w': torch.zeros(2)},
               'meta': _RunsCommand(marker)}
    if fmt == 'torch_zip':
        torch.save(payload, path)
    else:
        with open(path, 'wb') as f:
            pickle.dump(payload, f)
    with pytest.raises(UnsafeCheckpointError, match='refusing to load') as e:
        safe_load_checkpoint(str(path))
    assert str(path) in str(e.value)
    if fmt == 'torch_zip':
        assert 'posix.system' in str(e.value)
        assert 'could run code' in str(e.value)
    assert not marker.exists()


def test_user_allow_list_is_not_used(tmp_path):
    path = tmp_path / 'evil.pth'
    control = tmp_path / 'control_marker'
    marker = tmp_path / 'marker'
    torch.save({'x': _CallsFunction(control)}, path)
    with torch.serialization.safe_globals([_touch]):
        # Control: with the function allow-listed, plain torch.load runs it.
        torch.load(path, weights_only=True)
        assert control.exists()
        torch.save({'x': _CallsFunction(marker)}, path)
        with pytest.raises(UnsafeCheckpointError, match='_touch'):
            safe_load_checkpoint(str(path))
        assert _touch in torch.serialization.get_safe_globals()  # restored
    assert not marker.exists()


@pytest.mark.parametrize('load_from_only', [False, True])
def test_runner_refuses_code_running_checkpoint(tmp_path, make_runner,
                                                load_from_only):
    marker = tmp_path / 'marker'
    path = tmp_path / 'evil.pth'
    torch.save({'meta': {'epoch': 0, 'iter': 3}, 'state_dict': {},
                'message_hub': _RunsCommand(marker)}, path)
    runner = make_runner(tmp_path / 'work', resume=not load_from_only,
                         load_from=str(path))
    with pytest.raises(UnsafeCheckpointError, match='posix.system'):
        runner.train()
    assert not marker.exists()


def test_stock_mmengine_checkpoint_is_refused_with_a_hint(tmp_path):
    path = tmp_path / 'stock.pth'
    hub = {'log_scalars': {'loss': HistoryBuffer([1.0], [1])}}
    torch.save({'state_dict': {'w': torch.ones(1)}, 'message_hub': hub}, path)
    with pytest.raises(UnsafeCheckpointError) as e:
        safe_load_checkpoint(str(path))
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in str(e.value)
    assert 'SafeCheckpointHook' in str(e.value)


# ------------------------------------------------------ other failures
def test_missing_file_names_the_path(tmp_path):
    path = str(tmp_path / 'nope' / 'iter_3.pth')
    with pytest.raises(CheckpointNotFoundError) as e:
        safe_load_checkpoint(path)
    assert isinstance(e.value, FileNotFoundError)
    assert isinstance(e.value, CheckpointError)
    assert isinstance(e.value, ValueError)
    assert path in str(e.value) and 'does not exist' in str(e.value)


@pytest.mark.parametrize('content', [b'hello, this is text\n', b''])
def test_not_a_torch_checkpoint(tmp_path, content):
    path = tmp_path / 'notes.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError,
                       match='as a torch checkpoint') as e:
        safe_load_checkpoint(str(path))
    assert str(path) in str(e.value)


def test_plain_data_round_trip_restores_numpy_and_history(tmp_path):
    buf = HistoryBuffer([1.5, 2.5], [1, 3], max_length=7)
    checkpoint = {
        'state_dict': OrderedDict(w=torch.arange(3.)),
        'meta': {'arr': np.arange(6, dtype=np.float32).reshape(2, 3),
                 'names': np.array(['a', 'bc']),
                 'best': np.float64(0.25), 'flag': np.bool_(True),
                 'seed': 3, 'shape': (1, 2)},
        'message_hub': {'log_scalars': {'loss': buf}},
        'param_schedulers': [{'lr_lambda': lambda step: 1.0, 'last_step': 4}],
        'odd': {'obj': object()},
    }
    checkpoint['state_dict']._metadata = OrderedDict({'': {'version': 1}})
    dropped = make_checkpoint_safe(checkpoint)
    assert any("['lr_lambda']: callable" in d for d in dropped)
    assert any("['odd']['obj']: object" in d for d in dropped)
    path = tmp_path / 'c.pth'
    torch.save(checkpoint, path)
    _weights_only_plain(path)  # loads with no allowed globals
    loaded = safe_load_checkpoint(str(path))
    meta = loaded['meta']
    assert meta['arr'].dtype == np.float32 and meta['arr'].shape == (2, 3)
    np.testing.assert_array_equal(meta['arr'], np.arange(6).reshape(2, 3))
    assert meta['names'].tolist() == ['a', 'bc']
    assert type(meta['best']) is np.float64 and meta['best'] == 0.25
    assert type(meta['flag']) is np.bool_ and meta['flag']
    assert meta['shape'] == (1, 2) and meta['seed'] == 3
    new_buf = loaded['message_hub']['log_scalars']['loss']
    assert isinstance(new_buf, HistoryBuffer) and new_buf.max_length == 7
    np.testing.assert_array_equal(new_buf.data[0], buf.data[0])
    np.testing.assert_array_equal(new_buf.data[1], buf.data[1])
    assert new_buf.data[1].dtype == buf.data[1].dtype
    assert new_buf.mean() == buf.mean()
    assert loaded['param_schedulers'] == [{'last_step': 4}]
    assert loaded['odd'] == {}
    assert loaded['state_dict']._metadata == {'': {'version': 1}}


# ------------------------------------------------------ load_model_weights
class _Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.out = nn.Linear(4, 2)


def _snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(module, snapshot):
    return all(torch.equal(v, snapshot[k])
               for k, v in module.state_dict().items())


def test_load_model_weights_default_key_and_prefix(tmp_path):
    torch.manual_seed(0)
    src, dst = _Net(), _Net()
    path = tmp_path / 'ckpt.pth'
    nested = {f'decoder.{k}': v for k, v in src.state_dict().items()}
    nested['encoder.other'] = torch.zeros(1)
    torch.save({'state_dict': src.state_dict(), 'ema': nested}, path)
    load_model_weights(dst, str(path))
    assert _same(dst, src.state_dict())

    dst = _Net()
    load_model_weights(dst, str(path), key='ema', prefix='decoder')
    assert _same(dst, src.state_dict())

    plain = tmp_path / 'plain.pth'
    torch.save(src.state_dict(), plain)
    dst = _Net()
    load_model_weights(dst, str(plain))
    assert _same(dst, src.state_dict())


def test_load_model_weights_missing_file(tmp_path):
    path = str(tmp_path / 'decoder.pth')
    with pytest.raises(CheckpointNotFoundError) as e:
        load_model_weights(_Net(), path)
    assert path in str(e.value) and '_Net' in str(e.value)


def test_load_model_weights_key_mismatch_leaves_module_unchanged(tmp_path):
    torch.manual_seed(0)
    src = _Net()
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': {f'decoder.{k}': v
                               for k, v in src.state_dict().items()}}, path)
    dst = _Net()
    before = _snapshot(dst)
    with pytest.raises(StateDictMismatchError) as e:
        load_model_weights(dst, str(path))
    msg = str(e.value)
    assert '4 of 4 module keys missing' in msg and "'proj.weight'" in msg
    assert '4 of 4 checkpoint keys unexpected' in msg
    assert "'decoder.proj.weight'" in msg
    assert "prefix='decoder'" in msg
    assert _same(dst, before)
    with pytest.raises(StateDictMismatchError, match="top-level prefixes"):
        load_model_weights(dst, str(path), prefix='encoder')
    assert _same(dst, before)


def test_load_model_weights_shape_mismatch_leaves_module_unchanged(tmp_path):
    torch.manual_seed(0)
    src = _Net()
    src.out = nn.Linear(4, 5)  # head of another size, proj fits
    path = tmp_path / 'ckpt.pth'
    torch.save(src.state_dict(), path)
    dst = _Net()
    before = _snapshot(dst)
    for strict in (True, False):
        with pytest.raises(StateDictMismatchError,
                           match=r'out.weight: checkpoint \(5, 4\)'):
            load_model_weights(dst, str(path), strict=strict)
        assert _same(dst, before)  # proj.* untouched too


def test_load_model_weights_non_strict_loads_the_overlap(tmp_path):
    torch.manual_seed(0)
    src = _Net()
    path = tmp_path / 'ckpt.pth'
    state = src.state_dict()
    del state['out.bias']
    torch.save(state, path)
    dst = _Net()
    out_bias = dst.out.bias.detach().clone()
    with pytest.raises(StateDictMismatchError, match='out.bias'):
        load_model_weights(dst, str(path))
    load_model_weights(dst, str(path), strict=False)
    assert torch.equal(dst.proj.weight, src.proj.weight)
    assert torch.equal(dst.out.bias, out_bias)


def test_load_model_weights_wrong_layout(tmp_path):
    path = tmp_path / 'ckpt.pth'
    torch.save({'meta': {'epoch': 1}, 'model': _Net().state_dict()}, path)
    with pytest.raises(CheckpointFormatError, match='pass `key=`'):
        load_model_weights(_Net(), str(path))
    with pytest.raises(CheckpointFormatError, match="no entry 'ema'"):
        load_model_weights(_Net(), str(path), key='ema')
    load_model_weights(_Net(), str(path), key='model')
