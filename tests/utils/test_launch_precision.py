"""Precision and compile switches of the launcher (decq_plugin.utils.launch):
what each machine resolves to, how optim wrappers are rewritten, and how a
top-level ``compile`` becomes the model's region compilation."""
import pytest
import torch
from mmengine.config import Config

from decq_plugin.utils import launch

GPU = dict(cuda=True, bf16=True)
OLD_GPU = dict(cuda=True, bf16=False)
CPU = dict(cuda=False, bf16=False)


@pytest.mark.parametrize('requested,support,expected', [
    ('bf16', GPU, 'bf16'), ('bf16', OLD_GPU, 'fp16'), ('bf16', CPU, 'fp32'),
    ('fp16', GPU, 'fp16'), ('fp16', CPU, 'fp32'), ('tf32', GPU, 'tf32'),
    ('tf32', CPU, 'fp32'), ('fp32', GPU, 'fp32')])
def test_resolve_precision(requested, support, expected):
    assert launch.resolve_precision(requested, support) == expected


def test_resolve_precision_rejects_unknown():
    with pytest.raises(ValueError, match='precision must be one of'):
        launch.resolve_precision('half', GPU)


def _cfg(**kwargs) -> Config:
    base = dict(optim_wrapper=dict(
        constructor='SubmoduleOptimWrapperConstructor',
        tokenizer=dict(type='OptimWrapper', optimizer=dict(type='AdamW')),
        discriminator=dict(type='AmpOptimWrapper', dtype='float16',
                           optimizer=dict(type='AdamW'))))
    base.update(kwargs)
    return Config(base)


def test_apply_precision_rewrites_every_wrapper():
    cfg = _cfg()
    launch.apply_precision(cfg, 'bf16')
    for name in ('tokenizer', 'discriminator'):
        wrapper = cfg.optim_wrapper[name]
        assert wrapper.type == 'AmpOptimWrapper'
        assert wrapper.dtype == 'bfloat16'
        assert wrapper.loss_scale == dict(enabled=False)
        assert wrapper.optimizer == dict(type='AdamW')
    assert cfg.optim_wrapper.constructor == 'SubmoduleOptimWrapperConstructor'
    launch.apply_precision(cfg, 'fp32')
    for name in ('tokenizer', 'discriminator'):
        wrapper = cfg.optim_wrapper[name]
        assert wrapper.type == 'OptimWrapper'
        assert 'dtype' not in wrapper and 'loss_scale' not in wrapper
    assert cfg.precision == 'fp32'


def test_choose_precision_order():
    cfg = _cfg(precision='tf32')
    # --precision wins over --amp, --amp over the config key.
    assert launch.choose_precision(cfg, True, 'float16', 'fp32', GPU) == \
        'fp32'
    assert launch.choose_precision(cfg, True, 'float16', None, GPU) == 'fp16'
    assert launch.choose_precision(cfg, False, 'bfloat16', None, GPU) == \
        'tf32'
    assert launch.choose_precision(_cfg(), False, 'bfloat16', None,
                                   GPU) is None
    assert launch.choose_precision(cfg, True, 'bfloat16', None, CPU) == 'fp32'
    with pytest.raises(ValueError, match='amp-dtype'):
        launch.choose_precision(cfg, True, 'int8', None, GPU)


def test_set_matmul_precision_restorable():
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        launch.set_matmul_precision('bf16')
        assert torch.backends.cuda.matmul.allow_tf32
        launch.set_matmul_precision('fp32')
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_top_level_compile_moves_to_the_model():
    cfg = Config(dict(model=dict(type='X'), compile=True))
    launch.move_compile_to_model(cfg)
    assert cfg.compile is False and cfg.model.compile is True
    cfg = Config(dict(model=dict(type='X'),
                      compile=dict(backend='aot_eager')))
    launch.move_compile_to_model(cfg)
    assert cfg.model.compile == dict(backend='aot_eager')
    cfg = Config(dict(model=dict(type='X', compile=dict(regions=['a']))))
    launch.move_compile_to_model(cfg, force=True)
    assert cfg.model.compile == dict(regions=['a'])  # the config's own wins
    cfg = Config(dict(model=dict(type='X')))
    launch.move_compile_to_model(cfg)
    assert not cfg.model.get('compile')
    launch.move_compile_to_model(cfg, force=True)
    assert cfg.model.compile is True


def test_compile_switches_on_a_recipes_disabled_compile_dict():
    """A recipe's ``compile=dict(enabled=False, memory_budget=0.8)`` stays
    eager until ``--compile`` (or a top-level compile), which keeps its
    budget."""
    from decq_plugin.models.compile_regions import parse_compile_cfg
    own = dict(enabled=False, memory_budget=0.8)
    cfg = Config(dict(model=dict(type='X', compile=dict(own))))
    launch.move_compile_to_model(cfg)
    assert cfg.model.compile == own
    assert parse_compile_cfg(cfg.model.compile, ['a']) is None
    launch.move_compile_to_model(cfg, force=True)
    assert cfg.model.compile == dict(enabled=True, memory_budget=0.8)
    assert parse_compile_cfg(cfg.model.compile, ['a'])['memory_budget'] == 0.8
    cfg = Config(dict(model=dict(type='X', compile=dict(own)), compile=True))
    launch.move_compile_to_model(cfg)
    assert cfg.compile is False and cfg.model.compile.enabled is True
