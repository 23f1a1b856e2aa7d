"""Every shipped config, run as shipped through the real tools, shrunk in
size only (``decq_plugin/testing/shrink.py``).

For each ``configs/**/*.py`` (``_base_`` fragments excepted) and each
benchmark suite ``configs/benchmark/*.json``, found by globbing so that a
config added later is picked up without editing this file:

* stage 1: ``tools/train.py`` (validation every epoch), ``--resume`` for the
  last epoch, ``tools/test.py``;
* stage 2: the latent tools, ``tools/train.py`` with a validation pass,
  ``--resume``, ``tools/test.py`` and ``tools/sample.py`` with metrics;
* suites: ``tools/benchmark_tokenizers.py``.
"""
import importlib.util
import json
import math
import os.path as osp
from pathlib import Path

import numpy as np
import pytest
import torch

from decq_plugin.testing import shrink

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / 'configs').rglob('*.py')
                 if '_base_' not in p.parts)
SUITES = sorted((ROOT / 'configs' / 'benchmark').glob('*.json'))
# Configs whose smoke run is split by a --resume (the main recipes of each
# stage and the built-in demo); the others train every epoch in one run.
# Two-process resumes of both stages are in test_distributed.py.
RESUMED = {
    'rae/rae_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py',
    'decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py',
    'ldm/ldm_dit-dh-xl_rae-dinov2-b-reg_8xb128-80e_in1k-256.py',
    'ldm/ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_8xb128-80e_in1k-256.py',
    'demo/decq_tiny_1xb8-16e_demo-64.py',
    'demo/ldm_dit-dh-tiny_decq-tiny_1xb16-40e_demo-64.py',
}


def _load_smoke_tool():
    spec = importlib.util.spec_from_file_location(
        'decq_tool_smoke_config', ROOT / 'tools' / 'misc' / 'smoke_config.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


smoke = _load_smoke_tool()


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT / 'configs'))


@pytest.fixture(scope='module')
def shared_dir(tmp_path_factory) -> str:
    """Synthetic images and stage-2 artefacts, shared by the configs."""
    torch.set_flush_denormal(True)
    return str(tmp_path_factory.mktemp('smoke_shared'))


def _scalars(work_dir: str) -> list:
    """Every record of the runner's ``vis_data/scalars.json`` files."""
    records = []
    for path in Path(work_dir).rglob('scalars.json'):
        with open(path, encoding='utf-8') as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return records


GENERATION_KEYS = dict(fid='FID', is_='IS', precision='precision',
                       recall='recall', sfid='sFID')
RECONSTRUCTION_KEYS = dict(PSNRMetric='PSNR', SSIMMetric='SSIM',
                           ReconstructionFIDMetric='rFID')


def _expected_metrics(evaluator) -> set:
    """Result keys of an evaluator config (a metric or a list of them)."""
    if evaluator is None:
        return set()
    if not isinstance(evaluator, (list, tuple)):
        evaluator = [evaluator]
    out = set()
    for item in evaluator:
        if item.get('type') == 'GenerationMetric':
            out |= {GENERATION_KEYS['is_' if n == 'is' else n]
                    for n in item.get('metric_names', ('fid', 'is'))}
        elif item.get('type') in RECONSTRUCTION_KEYS:
            out.add(RECONSTRUCTION_KEYS[item['type']])
    return out


@pytest.mark.recipe
@pytest.mark.parametrize('config', CONFIGS, ids=_id)
def test_recipe_runs_as_shipped(config: Path, tmp_path, shared_dir):
    from decq_plugin.engine.checkpoint import safe_load_checkpoint
    from decq_plugin.utils.launch import load_config
    shipped = load_config(str(config))
    resume = _id(config) in RESUMED
    summary = smoke.smoke_config(str(config), str(tmp_path / 'run'),
                                 shared_dir=shared_dir, resume=resume)
    shrunk = load_config(summary['shrunk_config'])
    epochs = shrunk.train_cfg['max_epochs']
    work_dir = Path(summary['checkpoint']).parent

    # Trained to the end (resumed once where split), checkpoint keys
    # wrapper-free.
    if resume:
        assert Path(summary['first_checkpoint']).name == \
            f'epoch_{epochs - 1}.pth'
    last = safe_load_checkpoint(summary['checkpoint'])
    assert last['meta']['epoch'] == epochs
    assert not [k for k in last['state_dict'] if '.module.' in k]
    uses_ema = any(h.get('type') == 'EMAHook'
                   for h in shipped.get('custom_hooks', []))
    assert ('ema_state_dict' in last) == uses_ema
    earlier = work_dir / f'epoch_{epochs - 1}.pth'
    if resume or earlier.is_file():  # else the config saves less often
        first = safe_load_checkpoint(str(earlier))
        assert first['meta']['epoch'] == epochs - 1
        changed = [k for k, v in last['state_dict'].items()
                   if v.is_floating_point()
                   and not torch.equal(v, first['state_dict'][k])]
        assert changed, 'the last epoch changed no weight'
    for key, value in last['state_dict'].items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), key

    # A validation pass ran (when the recipe validates) and test metrics
    # are the evaluator's, finite.
    records = _scalars(osp.join(str(tmp_path / 'run'), 'train'))
    if shipped.get('val_evaluator') is not None:
        val_keys = {k for r in records for k in r}
        assert _expected_metrics(shipped.val_evaluator) <= val_keys, \
            sorted(val_keys)
    metrics = summary['test_metrics']
    assert _expected_metrics(shipped.get('test_evaluator')) <= set(metrics)
    assert metrics
    assert all(math.isfinite(v) for v in metrics.values()
               if isinstance(v, float))

    if summary['kind'] == 'stage2':
        with np.load(summary['npz']) as npz:
            images = npz['arr_0']
        size = shrink.image_size(shrunk.model.tokenizer)
        assert images.dtype == np.uint8
        assert images.shape == (shrink.NUM_CLASSES * 3, size, size, 3)
        assert images.std() > 0
        assert math.isfinite(summary['sample_metrics']['FID'])


@pytest.mark.recipe
@pytest.mark.parametrize('suite', SUITES, ids=lambda p: p.name)
def test_benchmark_suite_runs(suite: Path, tmp_path, shared_dir):
    with open(suite, encoding='utf-8') as f:
        names = [t['name'] for t in json.load(f)['tokenizers']]
    result = smoke.smoke_suite(str(suite), str(tmp_path / 'suite'),
                               shared_dir=shared_dir)
    assert [r['name'] for r in result['results']] == names
    for row in result['results']:
        assert 0 < row['metrics']['psnr'] < 100, row
    for path in result['paths'].values():
        assert osp.getsize(path) > 0
