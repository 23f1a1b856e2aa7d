"""precision='fp8': which layers train in float8 (decq_plugin/models/fp8.py),
how the launcher asks for it, and the Float8TrainingHook in a real runner:
the trained network converted, the EMA copy and the checkpoint plain."""
import sys

import pytest
import torch
from mmengine.config import Config
from torch import nn

from decq_plugin.models.diffusion.dit_dh import DiTDH
from decq_plugin.models.fp8 import (FP8_KEEP_PRECISE, fp8_linear_filter,
                                    require_torchao)
from decq_plugin.utils import launch

FP8_GPU = dict(cuda=True, bf16=True, fp8=True)
AMPERE = dict(cuda=True, bf16=True, fp8=False)
CPU = dict(cuda=False, bf16=False, fp8=False)


def test_filter_picks_the_block_projections_of_dit_dh_xl():
    with torch.device('meta'):
        model = DiTDH('XL', num_queries=8)
    picked = [name for name, m in model.named_modules()
              if fp8_linear_filter(m, name)]
    # qkv, attention output, SwiGLU in and out of the 28 body blocks; in
    # the 2 head blocks qkv and output only (SwiGLU hidden 5461: not 16k)
    assert len(picked) == 4 * 28 + 2 * 2
    for block in ('body_blocks.0', 'body_blocks.27'):
        for layer in ('attn.qkv', 'attn.proj', 'mlp.w_in', 'mlp.w_out'):
            assert f'{block}.{layer}' in picked
    assert 'head_blocks.1.attn.qkv' in picked
    assert model.head_blocks[0].mlp.w_out.in_features == 5461
    assert not any(word in name for name in picked
                   for word in FP8_KEEP_PRECISE)
    # large but kept precise: the modulations (1152 -> 6912)
    mod = model.body_blocks[0].modulation[1]
    assert mod.in_features >= 1024 and not fp8_linear_filter(
        mod, 'body_blocks.0.modulation.1')
    assert not fp8_linear_filter(nn.Linear(1000, 2048), 'x')  # not 16k


def test_resolve_fp8():
    assert launch.resolve_precision('fp8', FP8_GPU) == 'fp8'
    assert launch.resolve_precision('fp8', CPU) == 'fp32'
    with pytest.raises(ValueError, match='compute capability 8.9'):
        launch.resolve_precision('fp8', AMPERE)


def test_fp8_without_torchao_names_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, 'torchao', None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[fp8\]"'):
        require_torchao()
    cfg = Config(dict(model=dict(type='LatentDiffusionModel'),
                      optim_wrapper=dict(type='OptimWrapper',
                                         optimizer=dict(type='AdamW'))))
    with pytest.raises(ImportError, match='torchao'):  # on any machine
        launch.choose_precision(cfg, precision='fp8', support=CPU)


@pytest.mark.parametrize('model_type, trained', [
    ('LatentDiffusionModel', ['denoiser']),
    ('AutoencoderModel', ['tokenizer.decoder'])
])
def test_apply_fp8_is_bf16_plus_the_hook(model_type, trained):
    cfg = Config(dict(model=dict(type=model_type),
                      custom_hooks=[dict(type='EMAHook')],
                      optim_wrapper=dict(type='OptimWrapper',
                                         optimizer=dict(type='AdamW'))))
    launch.apply_precision(cfg, 'fp8')
    launch.apply_precision(cfg, 'fp8')  # once only
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == 'bfloat16'
    assert cfg.precision == 'fp8'
    assert cfg.custom_hooks == [
        dict(type='EMAHook'),
        dict(type='Float8TrainingHook', modules=trained)]
    other = Config(dict(model=dict(type='SomeOtherModel'),
                        optim_wrapper=dict(type='OptimWrapper')))
    with pytest.raises(ValueError, match='no float8 training recipe'):
        launch.apply_precision(other, 'fp8')


def _runner(work_dir):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Model(BaseModel):
        def __init__(self):
            super().__init__()
            self.denoiser = nn.Sequential(nn.Linear(32, 64), nn.SiLU(),
                                          nn.Linear(64, 32))
            self.head = nn.Linear(32, 1)

        def forward(self, inputs, data_samples=None, mode='loss'):
            out = self.head(self.denoiser(inputs)).squeeze(1)
            return dict(loss=(out - data_samples).pow(2).mean())

    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(32, generator=g), torch.randn((), generator=g))
            for _ in range(8)]
    return Runner(
        model=Model(), work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=[dict(inputs=x, data_samples=y) for x, y in data],
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=4, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        custom_hooks=[dict(type='EMAHook'),
                      dict(type='Float8TrainingHook', modules=['denoiser'],
                           min_features=32)],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=1)),
        default_scope='decq_plugin', experiment_name=f'fp8_{id(data)}')


def test_hook_trains_in_float8_and_saves_plain_weights(tmp_path):
    float8 = pytest.importorskip('torchao.float8.float8_linear')
    from decq_plugin.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    runner = _runner(tmp_path)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    layers = runner.model.denoiser
    assert isinstance(layers[0], float8.Float8Linear)
    assert isinstance(layers[2], float8.Float8Linear)
    assert type(runner.model.head) is nn.Linear  # not in `modules`
    ema = [h for h in runner.hooks if type(h).__name__ == 'EMAHook'][0]
    assert not any(isinstance(m, float8.Float8Linear)
                   for m in ema.ema_model.modules())
    state = torch.load(tmp_path / 'epoch_1.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    assert set(state) == set(before)
    changed = [k for k in before if not torch.equal(before[k], state[k])]
    assert 'denoiser.0.weight' in changed  # it trained
    assert all(torch.isfinite(v).all() for v in state.values())
    plain = _runner(tmp_path / 'plain').model
    plain.load_state_dict(state)  # strict: the keys of nn.Linear
