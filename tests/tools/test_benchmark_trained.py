"""tools/benchmark_tokenizers.py --train: every tokenizer is trained with
the same budget, frozen VFM and seeds before it is scored; the table shows
mean ± std over the seeds. Shrunk here (2 tokenizers, 2 seeds, a few steps)
to run in seconds; README shows the full built-in run."""
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest
import torch

from decq_plugin.apis import build_tokenizer_from_config
from decq_plugin.benchmark.runner import SuiteRunner, load_entry_config
from decq_plugin.benchmark.suite import SuiteError, load_suite, resolve_config
from decq_plugin.benchmark.training import (TrainSettings,
                                            build_train_dataset,
                                            train_tokenizer)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DECQ = osp.join(ROOT, 'configs/demo/decq_tiny_1xb8-16e_demo-64.py')
FAST = ['--repeats', '1', '--warmup', '0', '--throughput-batch', '4',
        '--no-progress']


def _tool():
    spec = importlib.util.spec_from_file_location(
        'decq_tool_benchmark_trained',
        osp.join(ROOT, 'tools', 'benchmark_tokenizers.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_moves_only_trainable_parts():
    settings = TrainSettings(iters=3, batch_size=4, seeds=[0])
    torch.manual_seed(0)
    tok = build_tokenizer_from_config(DECQ)
    before = {k: v.clone() for k, v in tok.state_dict().items()}
    out = train_tokenizer(tok, build_train_dataset(settings), settings, 0)
    assert out['steps'] == 3 and np.isfinite(out['last_loss'])
    after = tok.state_dict()
    vfm = [k for k in before if k.startswith('encoder.')]
    assert vfm and all(torch.equal(before[k], after[k]) for k in vfm)
    for key in ('decoder.head.weight', 'condenser.queries',
                'condenser.blocks.0.attn.kv.weight'):
        assert not torch.equal(before[key], after[key]), key
    assert not tok.training


def test_same_seed_same_frozen_vfm():
    """RAE and DecQ built under one seed start from one frozen VFM (the
    encoder is built first), so the comparison isolates the method."""
    suite = load_suite('builtin')
    runner = SuiteRunner(suite, '/nonexistent', device='cpu')
    cfgs = {e.name: e for e in suite.tokenizers}
    vfms = []
    for name in ('RAE', 'DecQ'):
        entry = cfgs[name]
        cfg = load_entry_config(resolve_config(entry, suite.root),
                                entry.cfg_options)
        vfms.append(runner.build(entry, cfg, seed=3).encoder.state_dict())
    assert vfms[0].keys() == vfms[1].keys()
    assert all(torch.equal(vfms[0][k], vfms[1][k]) for k in vfms[0])


def test_train_settings_are_checked():
    with pytest.raises(ValueError, match='iters'):
        TrainSettings(iters=0)
    with pytest.raises(ValueError, match='seeds'):
        TrainSettings(seeds=[1, 1])
    suite = load_suite('builtin')
    with pytest.raises(SuiteError, match='unexpected keyword'):
        suite.enable_training(epochs=3)


def test_builtin_trained_shrunk(tmp_path):
    out = tmp_path / 'bench'
    run = _tool().main([
        '--suite', 'builtin', '--only', 'RAE', 'DecQ', '--num-images', '8',
        '--train-iters', '4', '--train-seeds', '0', '1',
        '--out-dir', str(out), *FAST])
    rows = {r['name']: r for r in json.loads(
        (out / 'benchmark.json').read_text())['rows']}
    results = {r['name']: r for r in run['results']}
    for name in ('RAE', 'DecQ'):
        res = results[name]
        assert res['trained'] and not res['random_weights']
        assert [t['seed'] for t in res['training']] == [0, 1]
        assert all(t['steps'] == 4 for t in res['training'])
        per_seed = [m['psnr'] for m in res['metrics_per_seed']]
        assert per_seed[0] != per_seed[1]  # the seeds differ
        assert rows[name]['psnr'] == pytest.approx(np.mean(per_seed))
        assert rows[name]['psnr_std'] == pytest.approx(
            np.std(per_seed, ddof=1))
        assert rows[name]['seeds'] == 2
    markdown = (out / 'benchmark.md').read_text()
    assert ' ± ' in markdown and 'TRAINED here (--train)' in markdown
    assert 'RANDOM weights' not in markdown
    # Seed 0 of the trained RAE is the random RAE of seed 0, trained: its
    # PSNR is no longer the untrained one.
    untrained = _tool().main([
        '--suite', 'builtin', '--only', 'RAE', '--num-images', '8',
        '--out-dir', str(tmp_path / 'random'), *FAST])
    assert untrained['results'][0]['metrics']['psnr'] != \
        results['RAE']['metrics_per_seed'][0]['psnr']
