"""Misspelt keys inside built config dicts stop a run before anything is
built, with one line naming the key and the argument it probably means;
keys a class takes are neither refused nor warned about."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from decq_plugin.utils import constructor_check as C
from decq_plugin.utils.launch import load_config

ROOT = Path(__file__).resolve().parents[2]
FULL = 'configs/decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py'
DEMO = 'configs/demo/decq_tiny_1xb8-16e_demo-64.py'
SHIPPED = sorted(str(p.relative_to(ROOT))
                 for p in (ROOT / 'configs').rglob('*.py')
                 if '_base_' not in p.parts)


def _train_tool():
    spec = importlib.util.spec_from_file_location(
        'decq_tool_train_cc', ROOT / 'tools' / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('option, message', [
    ('default_hooks.checkpoint.intervall=1',
     "default_hooks.checkpoint.intervall: ResumableCheckpointHook takes no "
     "argument 'intervall' (did you mean 'interval'?)"),
    ('model.tokenizer.condenser.num_querys=2',
     "model.tokenizer.condenser.num_querys: QueryCondenser takes no argument"
     " 'num_querys' (did you mean 'num_queries'?)"),
    ('custom_hooks.0.momentumm=0.1',
     "custom_hooks[0].momentumm: EMAHook takes no argument 'momentumm' (did "
     "you mean 'momentum'?)"),
    ('param_scheduler.1.T_maxx=3',
     "param_scheduler[1].T_maxx: CosineAnnealingLR takes no argument "
     "'T_maxx' (did you mean 'T_max'?)"),
    ('optim_wrapper.tokenizer.optimizer.lrr=1',
     "optim_wrapper.tokenizer.optimizer.lrr: AdamW takes no argument 'lrr'"
     " (did you mean 'lr'?)"),
    ('train_dataloader.batch_sise=2',
     "train_dataloader.batch_sise: DataLoader takes no argument "
     "'batch_sise' (did you mean 'batch_size'?)"),
    ('train_dataloader.dataset.image_sise=32',
     "train_dataloader.dataset.image_sise: DemoImageDataset takes no "
     "argument 'image_sise' (did you mean 'image_size'?)"),
    ('val_evaluator.0.prefixx=a',
     "val_evaluator[0].prefixx: PSNRMetric takes no argument 'prefixx' "
     "(did you mean 'prefix'?)"),
    ('visualizer.nme=x',
     "visualizer.nme: RunVisualizer takes no argument 'nme' (did you mean "
     "'name'?)"),
    ('train_cfg.max_epoch=3',
     "train_cfg.max_epoch: EpochBasedTrainLoop takes no argument "
     "'max_epoch' (did you mean 'max_epochs'?)"),
])
def test_train_stops_before_building(option, message, tmp_path,
                                     monkeypatch):
    train = _train_tool()
    built = []
    monkeypatch.setattr(train, 'build_runner', built.append)
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    with pytest.raises(SystemExit) as err:
        train.main([str(ROOT / DEMO), '--work-dir', str(tmp_path),
                    '--cfg-options', option])
    text = str(err.value)
    assert message in text
    assert '\n' not in text and text.startswith('train.py: error: ')
    assert built == []


def test_accepted_key_is_not_warned_about(capsys):
    cfg = load_config(str(ROOT / FULL),
                      {'model.perceptual_loss.pretrained_trunk': False,
                       'default_hooks.checkpoint.save_begin': 2})
    assert cfg.model.perceptual_loss.pretrained_trunk is False
    assert 'WARNING' not in capsys.readouterr().err
    load_config(str(ROOT / FULL), {'model.perceptual_loss.pretrainedtrunk':
                                   False, 'allow_unknown_keys': True})
    assert 'model.perceptual_loss.pretrainedtrunk' in capsys.readouterr().err


def test_opt_out_with_allow_unknown_keys():
    cfg = load_config(str(ROOT / DEMO), {
        'model.tokenizer.condenser.num_querys': 2,
        'allow_unknown_keys': True})
    assert cfg.model.tokenizer.condenser.num_querys == 2


@pytest.mark.parametrize('config', SHIPPED)
def test_shipped_configs_pass(config):
    assert C.unknown_constructor_keys(load_config(str(ROOT / config))) == []


def test_kwargs_followed_to_where_they_go():
    hook = C.accepted_keys(C.resolve_type('ResumableCheckpointHook'))
    assert {'interval', 'max_keep_ckpts', 'save_last'} <= hook
    ema = C.accepted_keys(C.resolve_type('EMAHook'),
                          dict(ema_type='TrainableExponentialMovingAverage'))
    assert {'momentum', 'update_buffers', 'begin_epoch'} <= ema
    amp = C.accepted_keys(C.resolve_type('AmpOptimWrapper'))
    assert {'loss_scale', 'dtype', 'optimizer', 'clip_grad'} <= amp


def test_no_dotted_or_unknown_names_are_imported():
    assert C.resolve_type('os.system') is None
    assert C.resolve_type('subprocess::run') is None
    assert C.resolve_type('NoSuchThing') is None
    tree = dict(model=dict(type='torch.nn.Linear', in_featurez=2),
                other=dict(type='NoSuchThing', anything=1))
    assert C.unknown_constructor_keys(tree) == []


def test_one_line_from_the_command_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'train.py'), DEMO,
         '--work-dir', str(tmp_path), '--cfg-options',
         'model.tokenizer.condenser.num_querys=2'],
        cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr
    assert proc.stderr.strip().count('\n') == 0, proc.stderr
    assert "did you mean 'num_queries'?" in proc.stderr
