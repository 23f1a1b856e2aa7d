"""tools/train.py and tools/test.py: argument parsing, how the flags change
the config, clear errors, and one tiny CPU run of each through a Runner."""
import importlib.util
import json
import os.path as osp
import warnings
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

TOOLS = Path(__file__).resolve().parents[2] / 'tools'


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f'decq_tool_{name}',
                                                  TOOLS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_tool = _load_tool('train')
test_tool = _load_tool('test')


@pytest.fixture(autouse=True)
def keep_local_rank(monkeypatch):
    """parse_args sets LOCAL_RANK; undo that after each test."""
    monkeypatch.delenv('LOCAL_RANK', raising=False)


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture
def config_file(tmp_path) -> str:
    return _write(
        tmp_path / 'toy_cfg.py', 'optim_wrapper = dict(type="OptimWrapper", '
        'optimizer=dict(type="SGD", lr=0.1))\n'
        'train_cfg = dict(max_iters=5)\n'
        'load_from = "from_config.pth"\n')


@pytest.fixture
def checkpoint_file(tmp_path) -> str:
    path = tmp_path / 'model.pth'
    torch.save({'state_dict': {}}, path)
    return str(path)


def _train_cfg(config_file: str, *flags: str):
    args = train_tool.parse_args([config_file, *flags])
    cfg = train_tool.load_config(args.config, args.cfg_options)
    return train_tool.merge_args(cfg, args)


# ----------------------------------------------------------- parsing ----


def test_train_parse_defaults():
    args = train_tool.parse_args(['c.py'])
    assert args.config == 'c.py'
    assert args.work_dir is None
    assert args.resume is None
    assert args.amp is False
    assert args.auto_scale_lr is False
    assert args.cfg_options is None
    assert args.launcher == 'none'


def test_train_parse_flags():
    args = train_tool.parse_args([
        'c.py', '--work-dir', 'w', '--resume', '--amp', '--auto-scale-lr',
        '--cfg-options', 'train_cfg.max_iters=3', 'model.sizes=[1,2]',
        '--launcher', 'pytorch', '--local-rank', '2'
    ])
    assert args.work_dir == 'w'
    assert args.resume == 'auto'
    assert args.amp and args.auto_scale_lr
    assert args.cfg_options == {
        'train_cfg.max_iters': 3,
        'model.sizes': [1, 2]
    }
    assert args.launcher == 'pytorch'
    assert args.local_rank == 2
    assert train_tool.parse_args(['c.py', '--resume', 'x.pth']).resume == \
        'x.pth'
    assert train_tool.parse_args(['c.py', '--local_rank', '1']).local_rank \
        == 1


def test_parse_rejects_unknown_launcher():
    with pytest.raises(SystemExit):
        train_tool.parse_args(['c.py', '--launcher', 'ray'])
    with pytest.raises(SystemExit):
        test_tool.parse_args(['c.py', 'ckpt.pth', '--launcher', 'ray'])


def test_test_parse():
    args = test_tool.parse_args([
        'c.py', 'm.pth', '--out', 'r.json', '--work-dir', 'w',
        '--cfg-options', 'a=1'
    ])
    assert (args.config, args.checkpoint, args.out) == ('c.py', 'm.pth',
                                                        'r.json')
    assert args.work_dir == 'w'
    assert args.cfg_options == {'a': 1}
    assert args.launcher == 'none'


# ------------------------------------------------------------ merging ----


@pytest.fixture
def on_gpu(monkeypatch):
    """Precision choices as on a GPU with native bf16."""
    from decq_plugin.utils import launch
    monkeypatch.setattr(launch, 'accelerator_support',
                        lambda: dict(cuda=True, bf16=True))


def test_amp_single_optim_wrapper(config_file, on_gpu):
    cfg = _train_cfg(config_file, '--amp')
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == 'bfloat16'
    assert cfg.optim_wrapper.loss_scale == dict(enabled=False)
    assert cfg.precision == 'bf16'
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=0.1)
    assert _train_cfg(config_file).optim_wrapper.type == 'OptimWrapper'
    fp16 = _train_cfg(config_file, '--amp', '--amp-dtype', 'float16')
    assert fp16.optim_wrapper.type == 'AmpOptimWrapper'
    assert (fp16.optim_wrapper.dtype, fp16.optim_wrapper.loss_scale) == (
        'float16', 'dynamic')
    tf32 = _train_cfg(config_file, '--amp', '--precision', 'tf32')
    assert tf32.optim_wrapper.type == 'OptimWrapper' and \
        tf32.precision == 'tf32'


def test_amp_on_the_cpu_trains_in_float32(config_file, monkeypatch):
    from decq_plugin.utils import launch
    monkeypatch.setattr(launch, 'accelerator_support',
                        lambda: dict(cuda=False, bf16=False))
    cfg = _train_cfg(config_file, '--amp')
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert 'dtype' not in cfg.optim_wrapper
    assert cfg.precision == 'fp32'


def test_amp_wrapper_without_type(tmp_path, on_gpu):
    path = _write(tmp_path / 'c.py',
                  'optim_wrapper = dict(optimizer=dict(type="SGD", lr=1))\n')
    assert _train_cfg(path, '--amp').optim_wrapper.type == 'AmpOptimWrapper'


def test_amp_dict_of_optim_wrappers(tmp_path, on_gpu):
    path = _write(
        tmp_path / 'gan.py', 'optim_wrapper = dict(\n'
        '    constructor="MultiOptimWrapperConstructor",\n'
        '    generator=dict(type="OptimWrapper",\n'
        '                   optimizer=dict(type="AdamW", lr=2e-4)),\n'
        '    discriminator=dict(optimizer=dict(type="AdamW", lr=1e-4)))\n')
    wrappers = _train_cfg(path, '--amp').optim_wrapper
    assert wrappers.constructor == 'MultiOptimWrapperConstructor'
    assert wrappers.generator.type == 'AmpOptimWrapper'
    assert wrappers.discriminator.type == 'AmpOptimWrapper'
    assert wrappers.generator.optimizer.lr == 2e-4
    assert wrappers.discriminator.optimizer.lr == 1e-4


def test_amp_refuses_custom_wrapper_and_missing_wrapper(tmp_path, on_gpu):
    custom = _write(
        tmp_path / 'custom.py', 'optim_wrapper = dict(gen=dict('
        'type="MyWrapper", optimizer=dict(type="SGD", lr=1)))\n')
    with pytest.raises(ValueError, match='optim_wrapper.gen.type.*MyWrapper'):
        _train_cfg(custom, '--amp')
    empty = _write(tmp_path / 'empty.py', 'model = dict(type="X")\n')
    with pytest.raises(ValueError, match='no optim_wrapper'):
        _train_cfg(empty, '--amp')


def test_resume_auto_and_path(config_file, checkpoint_file, tmp_path):
    cfg = _train_cfg(config_file)
    assert cfg.get('resume', False) is False
    assert cfg.load_from == 'from_config.pth'

    cfg = _train_cfg(config_file, '--resume')
    assert cfg.resume is True
    assert cfg.load_from is None  # the latest checkpoint of the work dir

    cfg = _train_cfg(config_file, '--resume', checkpoint_file)
    assert cfg.resume is True
    assert cfg.load_from == checkpoint_file

    missing = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        _train_cfg(config_file, '--resume', missing)


def test_work_dir_precedence(config_file, tmp_path):
    assert _train_cfg(config_file).work_dir == osp.join(
        './work_dirs', 'toy_cfg')
    with_dir = _write(tmp_path / 'with_dir.py', 'work_dir = "from_cfg"\n')
    assert _train_cfg(with_dir).work_dir == 'from_cfg'
    assert _train_cfg(with_dir, '--work-dir', 'cli').work_dir == 'cli'
    args = test_tool.parse_args([with_dir, 'm.pth'])
    assert test_tool.resolve_work_dir(
        Config.fromfile(with_dir), args.work_dir, with_dir) == 'from_cfg'


def test_cfg_options_applied_and_flags_win(config_file):
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # known keys give no warning
        cfg = _train_cfg(config_file, '--cfg-options',
                         'train_cfg.max_iters=7', 'work_dir=from_options',
                         'env_cfg.cudnn_benchmark=True',
                         'optim_wrapper.optimizer.lr=0.5')
    assert cfg.env_cfg.cudnn_benchmark is True
    assert cfg.train_cfg.max_iters == 7
    assert cfg.optim_wrapper.optimizer.lr == 0.5
    assert cfg.work_dir == 'from_options'
    cfg = _train_cfg(config_file, '--cfg-options', 'work_dir=from_options',
                     '--work-dir', 'cli')
    assert cfg.work_dir == 'cli'


def test_unknown_cfg_option_key_is_reported(config_file, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # filters must not hide the report
        cfg = _train_cfg(config_file, '--cfg-options', 'train_cfg.max_iter=4',
                         'train_cfg.max_iters=6')
    message = capsys.readouterr().err
    assert 'train_cfg.max_iter\'' in message
    assert 'train_cfg.max_iters\'' not in message
    assert cfg.train_cfg.max_iters == 6
    assert cfg.train_cfg.max_iter == 4  # added, as MMEngine does


def test_misspelt_top_level_option_is_refused(config_file):
    with pytest.raises(ValueError, match="did you mean 'train_cfg'"):
        _train_cfg(config_file, '--cfg-options', 'trian_cfg.max_iters=3')
    cfg = _train_cfg(config_file, '--cfg-options', 'trian_cfg.max_iters=3',
                     'allow_unknown_keys=True')
    assert cfg.trian_cfg.max_iters == 3  # opted out explicitly


def test_default_scope_and_launcher(config_file, tmp_path):
    cfg = _train_cfg(config_file, '--launcher', 'slurm')
    assert cfg.default_scope == 'decq_plugin'
    assert cfg.launcher == 'slurm'
    other = _write(tmp_path / 'other.py', 'default_scope = "mmpretrain"\n')
    assert _train_cfg(other).default_scope == 'mmpretrain'


def test_auto_scale_lr(tmp_path, config_file):
    path = _write(tmp_path / 'scaled.py',
                  'auto_scale_lr = dict(base_batch_size=512)\n')
    cfg = _train_cfg(path, '--auto-scale-lr')
    assert cfg.auto_scale_lr == dict(base_batch_size=512, enable=True)
    assert _train_cfg(path).auto_scale_lr.get('enable', False) is False
    with pytest.raises(ValueError, match='base_batch_size'):
        _train_cfg(config_file, '--auto-scale-lr')


# ------------------------------------------------------------- errors ----


def test_missing_config_is_a_clear_error(tmp_path, capsys):
    missing = str(tmp_path / 'no_such_config.py')
    with pytest.raises(SystemExit) as exit_info:
        train_tool.main([missing])
    message = str(exit_info.value.code)
    assert 'config file not found' in message
    assert 'no_such_config.py' in message


def test_missing_checkpoint_fails_before_building(config_file, tmp_path,
                                                  monkeypatch):

    def no_build(cfg):
        raise AssertionError('the runner must not be built')

    monkeypatch.setattr(test_tool, 'build_runner', no_build)
    missing = str(tmp_path / 'no_such_checkpoint.pth')
    with pytest.raises(SystemExit) as exit_info:
        test_tool.main([config_file, missing])
    message = str(exit_info.value.code)
    assert 'checkpoint not found' in message
    assert 'no_such_checkpoint.pth' in message


def test_test_merge_sets_load_from(config_file, checkpoint_file):
    args = test_tool.parse_args(
        [config_file, checkpoint_file, '--work-dir', 'w'])
    cfg = test_tool.merge_args(test_tool.load_config(args.config), args)
    assert cfg.load_from == checkpoint_file
    assert cfg.resume is False
    assert cfg.work_dir == 'w'
    bad = test_tool.parse_args([config_file, checkpoint_file, '--out', 'r'])
    with pytest.raises(ValueError, match='json'):
        test_tool.merge_args(test_tool.load_config(args.config), bad)


def test_metrics_to_json():
    import numpy as np
    metrics = {
        'psnr': torch.tensor(31.5),
        'fid': np.float32(2.5),
        'count': np.int64(3),
        'per_class': [torch.tensor([1.0, 2.0])],
        'name': 'x'
    }
    assert test_tool.to_json(metrics) == {
        'psnr': 31.5,
        'fid': 2.5,
        'count': 3,
        'per_class': [[1.0, 2.0]],
        'name': 'x'
    }


# ------------------------------------------------ tiny runs on the CPU ----

TOY_PARTS = '''
import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, METRICS, MODELS
from torch.utils.data import Dataset


@MODELS.register_module(force=True)
class DecqCliToyRegressor(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs, targets, mode='tensor'):
        pred = self.linear(inputs)
        if mode == 'loss':
            return {'loss': ((pred - targets) ** 2).mean()}
        if mode == 'predict':
            return [dict(err=float(((p - t) ** 2).mean()))
                    for p, t in zip(pred, targets)]
        return pred


@DATASETS.register_module(force=True)
class DecqCliToyData(Dataset):
    def __init__(self, n=8):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 2, generator=gen)
        self.y = self.x.sum(1, keepdim=True) + 1.0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], targets=self.y[i])


@METRICS.register_module(force=True)
class DecqCliToyMSE(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results.extend(s['err'] for s in data_samples)

    def compute_metrics(self, results):
        return {'mse': sum(results) / len(results)}
'''

TOY_CONFIG = '''
custom_imports = dict(imports=['decq_cli_toy_parts'],
                      allow_failed_imports=False)
model = dict(type='DecqCliToyRegressor')
_loader = dict(batch_size=4, num_workers=0,
               dataset=dict(type='DecqCliToyData', n=8),
               sampler=dict(type='DefaultSampler', shuffle=False),
               collate_fn=dict(type='default_collate'))
train_dataloader = _loader
test_dataloader = _loader
test_evaluator = dict(type='DecqCliToyMSE')
test_cfg = dict()
train_cfg = dict(by_epoch=False, max_iters=2)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
    logger=dict(type='LoggerHook', interval=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
'''


@pytest.fixture
def toy_config(tmp_path, monkeypatch) -> str:
    (tmp_path / 'decq_cli_toy_parts.py').write_text(TOY_PARTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(DefaultScope._instance_dict)
    yield _write(tmp_path / 'toy_regression.py', TOY_CONFIG)
    for name in set(DefaultScope._instance_dict) - before:
        DefaultScope._instance_dict.pop(name)


def test_train_then_test_on_cpu(toy_config, tmp_work_dir, tmp_path):
    train_tool.main([
        toy_config, '--work-dir', tmp_work_dir, '--cfg-options',
        'train_cfg.max_iters=2'
    ])
    assert osp.isfile(osp.join(tmp_work_dir, 'iter_2.pth'))
    dumped = Config.fromfile(osp.join(tmp_work_dir, 'toy_regression.py'))
    assert dumped.default_scope == 'decq_plugin'
    assert dumped.work_dir == tmp_work_dir

    # Zero weights and bias 0.5: the expected error is known exactly.
    checkpoint = str(tmp_path / 'weights.pth')
    torch.save(
        {
            'state_dict': {
                'linear.weight': torch.zeros(1, 2),
                'linear.bias': torch.full((1, ), 0.5)
            }
        }, checkpoint)
    out = str(tmp_path / 'results' / 'metrics.json')
    test_tool.main([
        toy_config, checkpoint, '--work-dir',
        osp.join(tmp_work_dir, 'test'), '--out', out
    ])
    x = torch.rand(8, 2, generator=torch.Generator().manual_seed(0))
    expected = ((x.sum(1) + 1.0 - 0.5)**2).mean().item()
    with open(out) as f:
        metrics = json.load(f)
    assert metrics['mse'] == pytest.approx(expected, rel=1e-5)


def test_test_refuses_a_checkpoint_of_another_model(toy_config, tmp_path,
                                                    capsys):
    """The runner's load_from is not strict: tools/test.py checks the keys
    first, so a checkpoint from elsewhere stops it with the keys named."""
    checkpoint = str(tmp_path / 'other.pth')
    torch.save({'state_dict': {'decoder.head.weight': torch.zeros(3, 2)}},
               checkpoint)
    with pytest.raises(SystemExit) as exit_info:
        test_tool.main([
            toy_config, checkpoint, '--work-dir',
            str(tmp_path / 'work')
        ])
    message = str(exit_info.value)
    assert 'other.pth' in message
    assert 'linear.weight' in message and 'decoder.head.weight' in message


@pytest.mark.parametrize('tool, name', [(train_tool, 'train.py'),
                                        (test_tool, 'test.py')])
def test_misspelt_type_stops_before_the_runner(tmp_path, tool, name):
    """A misspelt registered name ends in one line naming the key and the
    name it probably means, before any model is built."""
    cfg = _write(tmp_path / 'typo.py', (
        "_base_ = ['%s']\nmodel = dict(type='AutoencoderModle')\n" %
        osp.join(osp.dirname(TOOLS), 'configs', 'demo',
                 'decq_tiny_1xb8-16e_demo-64.py')))
    args = [cfg, '--work-dir', str(tmp_path / 'wd')]
    if name == 'test.py':
        ckpt = tmp_path / 'some.pth'
        torch.save({'state_dict': {}}, ckpt)  # read only after the check
        args.insert(1, str(ckpt))
    with pytest.raises(SystemExit) as exc:
        tool.main(args)
    message = str(exc.value)
    assert message.startswith(f'{name}: error:'), message
    assert "model.type='AutoencoderModle'" in message
    assert "did you mean 'AutoencoderModel'" in message


def test_registered_and_scoped_types_are_not_flagged():
    from decq_plugin.utils import register_all_modules
    from decq_plugin.utils.config_check import misspelt_types
    register_all_modules(init_default_scope=False)
    cfg = dict(model=dict(type='AutoencoderModel',
                          tokenizer=dict(type='DecQTokenizer')),
               other=[dict(type='mmpretrain.VisionTransformer'),
                      dict(type='SomethingElseEntirely'),
                      dict(type='LoggerHook'), dict(type='AdamW')],
               hooks=[dict(type='EMAHok')])
    assert misspelt_types(cfg) == [
        "hooks[0].type='EMAHok' (did you mean 'EMAHook'?)"]
