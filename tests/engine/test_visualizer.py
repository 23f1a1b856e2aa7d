"""RunVisualizer: TensorBoard / W&B switched on by name; a missing package
is a clear error at start-up; tools/train.py takes the switch from
--cfg-options."""
import importlib.util
import os.path as osp
import uuid

import pytest
from mmengine.config import Config

from decq_plugin.engine import visualizer as vis_module
from decq_plugin.engine.visualizer import RunVisualizer, backend_configs
from decq_plugin.registry import VISUALIZERS


ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _name() -> str:
    return f'vis-{uuid.uuid4().hex}'


@pytest.fixture
def installed(monkeypatch):
    """Pretend tensorboard and wandb are installed."""
    real = importlib.util.find_spec

    def find_spec(name, *args):
        if name in ('tensorboard', 'wandb'):
            return object()
        return real(name, *args)

    monkeypatch.setattr(vis_module.importlib.util, 'find_spec', find_spec)


def test_backends_by_name(installed, tmp_path):
    vis = VISUALIZERS.build(dict(
        type='RunVisualizer', name=_name(), save_dir=str(tmp_path),
        vis_backends=[dict(type='LocalVisBackend')],
        backends=['tensorboard', 'wandb'],
        wandb_kwargs=dict(project='decq')))
    kinds = [type(b).__name__ for b in vis._vis_backends.values()]
    assert kinds == ['LocalVisBackend', 'TensorboardVisBackend',
                     'WandbVisBackend']
    wandb, = [b for b in vis._vis_backends.values()
              if type(b).__name__ == 'WandbVisBackend']
    assert wandb._init_kwargs == dict(project='decq')
    assert backend_configs('tensorboard') == [
        dict(type='TensorboardVisBackend')]


def test_missing_package_and_unknown_name(monkeypatch):
    monkeypatch.setattr(vis_module.importlib.util, 'find_spec',
                        lambda name, *a: None)
    with pytest.raises(ImportError, match='pip install tensorboard'):
        RunVisualizer(name=_name(), backends=['tensorboard'])
    with pytest.raises(ValueError, match="'tensorbord' is not one of"):
        backend_configs(['tensorbord'])


def test_runtime_takes_the_switch_from_cfg_options():
    from decq_plugin.utils.launch import load_config
    cfg = load_config(osp.join(
        ROOT, 'configs/rae/rae_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py'),
        {'visualizer.backends': ['tensorboard']})
    assert cfg.visualizer.type == 'RunVisualizer'
    assert cfg.visualizer.backends == ['tensorboard']
    assert isinstance(cfg, Config)


def _setup_extras() -> dict:
    """``extras_require`` of setup.py: extra name -> requirements file name."""
    import ast
    with open(osp.join(ROOT, 'setup.py'), encoding='utf-8') as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == 'extras_require':
            return {key.value: value.args[0].value
                    for key, value in zip(node.value.keys, node.value.values)
                    if isinstance(value, ast.Call)}
    raise AssertionError('setup.py has no extras_require')


def test_tensorboard_has_an_extra_named_in_the_error(monkeypatch):
    extras = _setup_extras()
    assert 'tensorboard' in extras
    with open(osp.join(ROOT, 'requirements',
                       f"{extras['tensorboard']}.txt")) as f:
        lines = [line.split('#')[0].strip() for line in f]
    assert any(line.startswith('tensorboard') for line in lines)
    monkeypatch.setattr(vis_module.importlib.util, 'find_spec',
                        lambda name, *a: None)
    with pytest.raises(ImportError, match=r'\.\[tensorboard\]'):
        RunVisualizer(name=_name(), backends=['tensorboard'])
