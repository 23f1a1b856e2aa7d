"""Every stage-2 config builds its full-size model on the meta device, with
the reference DiT-DH sizes and what its name promises."""
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.registry import init_default_scope

from decq_plugin.registry import MODELS
from decq_plugin.utils.launch import load_config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'ldm', '*.py')))
# RAE-mode DiT-DH sizes (the reference release counts ~196M / ~294M / ~838M;
# it also counts its fixed position tables, 0.1M more).
RAE_PARAMS = {'s': 196_357_204, 'b': 294_099_028, 'xl': 838_380_628}


def _build(path: str):
    init_default_scope('decq_plugin')
    cfg = load_config(path)
    with torch.device('meta'):
        return MODELS.build(cfg.model)


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_stage2_config_builds_full_size(path):
    name = osp.basename(path)
    size, latents = re.match(r'ldm_dit-dh-(s|b|xl)_(rae|decq)-',
                             name).groups()
    res = int(re.search(r'-(\d+)\.py$', name).group(1))
    model = _build(path)
    n = sum(p.numel() for p in model.denoiser.parameters())
    tok = model.tokenizer
    grid = res // 16  # 16x16 latents at 256 px, 32x32 at 512 px
    assert tok.latent_shapes['patch'] == (768, grid, grid)
    assert tok.image_size == res
    assert model.denoiser.grid_size == grid
    # The time shift follows the latent size: sqrt(h * w * 768 / 4096).
    noise = model.make_noise(1, device='meta')
    assert model.loss.time_shift(noise) == pytest.approx(
        (grid * grid * 768 / 4096) ** 0.5)
    if latents == 'rae':
        assert tok.num_queries == 0 and n == RAE_PARAMS[size]
    else:
        q = int(re.search(r'decq-q(\d+)-', name).group(1))
        assert tok.num_queries == q
        assert n > RAE_PARAMS[size]
        layers = re.search(r'-l(\d+)-', name).group(1)
        assert tuple(tok.condenser.layers) == tuple(int(c) for c in layers)
    # The frozen tokenizer is not trained.
    assert not any(p.requires_grad for p in tok.parameters())
    assert all(p.requires_grad for p in model.denoiser.parameters())
    # The fused block kernels by default; eager until --compile.
    assert model.denoiser.fused_kernels is True
    assert model.compiled_regions == []


@pytest.mark.parametrize('latents', ['decq-q8-l0369', 'rae'])
def test_guidance_and_decoder_variants(latents):
    by_name = {osp.basename(p): p for p in CONFIGS}
    base = f'ldm_dit-dh-xl_{latents}-dinov2-b-reg_{{}}8xb128-800e_in1k-256.py'
    cfg_model = _build(by_name[base.format('cfg_')])
    assert type(cfg_model.guidance).__name__ == 'ClassifierFreeGuidance'
    assert cfg_model.guidance.scale > 1
    auto = _build(by_name[base.format('autoguidance_')])
    assert type(auto.guidance).__name__ == 'AutoGuidance'
    guide = sum(p.numel() for p in auto.guidance.guide.parameters())
    main = sum(p.numel() for p in auto.denoiser.parameters())
    assert guide < main / 3  # a DiT-DH-S guides the XL model
    plain = _build(by_name[base.format('')])
    assert plain.guidance is None and plain.rae_decoder is None
    if latents == 'rae':
        return
    rae_dec = _build(by_name[base.format('rae-decoder_')])
    assert rae_dec.rae_decoder is not None
    assert rae_dec.rae_decoder.num_queries == 0
