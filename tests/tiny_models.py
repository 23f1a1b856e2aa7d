"""Tiny model configs and helpers shared by the API and tool tests.

Imported as ``tiny_models``: pytest puts ``tests/`` on ``sys.path`` when it
loads ``tests/conftest.py``.
"""
import copy
import importlib.util
from pathlib import Path
from types import ModuleType

import torch

from decq_plugin.apis import build_model_from_config

ROOT = Path(__file__).resolve().parents[1]
# The tiny stage-1 demo recipe (64 px images).
DEMO_DECQ = str(ROOT / 'configs/demo/decq_tiny_1xb8-16e_demo-64.py')
# Tiny DINOv2-layout VFM (28 px, patch 14 -> 2x2 grid, 32 channels),
# 2 queries; the decoder makes 32 px images.
TINY_TOKENIZER = dict(
    type='DecQTokenizer',
    encoder=dict(type='TimmViTEncoder', pretrained=False, input_size=28,
                 model_kwargs=dict(embed_dim=32, depth=4, num_heads=2)),
    decoder=dict(type='ViTPixelDecoder', patch_size=16,
                 arch=dict(width=32, depth=1, num_heads=2, mlp_dim=64)),
    condenser=dict(type='QueryCondenser', num_queries=2, layers=(1, 3),
                   num_heads=2))
TINY_DIT = dict(type='DiTDH', arch=dict(
    body_width=32, body_depth=1, body_heads=2, head_width=32, head_depth=1,
    head_heads=2))


def tiny_ldm(num_classes: int = 3, num_points: int = 3) -> dict:
    """A LatentDiffusionModel config of :data:`TINY_TOKENIZER` and
    :data:`TINY_DIT` with an Euler sampler of ``num_points`` points."""
    return dict(type='LatentDiffusionModel', num_classes=num_classes,
                sampler=dict(type='EulerSampler', num_points=num_points),
                tokenizer=copy.deepcopy(TINY_TOKENIZER),
                denoiser=copy.deepcopy(TINY_DIT))


def randomize(module: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    """Non-zero weights (a fresh DiT predicts exactly 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def load_tool(script: str, module_name: str) -> ModuleType:
    """``tools/<script>.py`` imported as a new module ``module_name``."""
    spec = importlib.util.spec_from_file_location(
        module_name, ROOT / 'tools' / f'{script}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_demo_decq():
    """The :data:`DEMO_DECQ` model without its discriminator, seed 0."""
    torch.manual_seed(0)
    return build_model_from_config(
        DEMO_DECQ, cfg_options={'model.discriminator': None})
