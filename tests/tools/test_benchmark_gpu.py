"""tools/analysis/benchmark_gpu.py: its CPU dry run (every part, tiny
models, the demo configs, real tools/train.py and tools/sample.py runs), the
stability mode, and the log parsing, so the one-shot GPU run cannot break
unseen."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from fake_rae_code import fake_rae_src

TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'analysis' / \
    'benchmark_gpu.py'
_spec = importlib.util.spec_from_file_location('decq_benchmark_gpu', TOOL)
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # picklable functions (worker pools)
_spec.loader.exec_module(bench)

LOG = '''
11/30 20:54:59 - mmengine - INFO - Epoch(train) [1][5/30]  time: 9.2054  data_time: 0.0082  memory: 100  loss: 4.0071
11/30 20:55:01 - mmengine - INFO - Epoch(train) [1][10/30]  time: 0.5000  data_time: 0.0050  memory: 120  loss: 3.9399
11/30 20:55:02 - mmengine - INFO - Epoch(train) [1][15/30]  time: 0.4000  data_time: 0.0108  memory: 121  loss: 3.8619
11/30 20:55:02 - mmengine - INFO - Epoch(train) [1][20/30]  time: 0.6000  data_time: 0.0108  memory: 122  loss: nan
'''  # noqa: E501


def test_parse_train_log_skips_the_compile_window():
    r = bench.parse_train_log(LOG, batch=128, skip_windows=1)
    assert r['step_times'] == [9.2054, 0.5, 0.4, 0.6]
    assert r['data_times'][0] == 0.0082
    assert r['step_s'] == 0.5  # median of the windows after the first
    assert r['img_s'] == 256.0
    assert r['memory_mib'] == 122
    assert r['last_losses'] == ['3.9399', '3.8619', 'nan']


def test_unknown_part_is_refused():
    with pytest.raises(SystemExit):
        bench.parse_args(['--parts', 'matmul,fly'])


def test_dry_run_of_every_part(tmp_path):
    out = tmp_path / 'out'
    results = bench.main(['--dry-run', '--out-dir', str(out)])
    saved = json.loads((out / 'benchmark_gpu.json').read_text())
    assert saved['env']['gpu'] == 'cpu' and 'torch' in saved['env']
    assert '--dry-run' in saved['env']['command']
    step = results['step']
    assert step['img_s'] > 0 and step['cfg_forward_img_s_per_nfe'] > 0
    assert step['compiled']['frames'] >= 2  # body and head block graphs
    for part in ('train2', 'train1'):
        r = results[part]
        assert r['rc'] == 0, r.get('tail')
        assert r['img_s'] > 0 and len(r['step_times']) == 2, part
        assert all(v not in ('nan', 'inf') for v in r['last_losses'])
    sample = results['sample']
    assert 'tail' not in sample, sample.get('tail')
    assert sample['images'] == 2 and sample['img_s'] > 0
    assert sample['precision'] == 'fp32'
    rows = {r['what']: r for r in results['headline']}
    assert set(rows) == {'DiTDH, RAE mode', 'DiTDH, DecQ mode',
                         'DiTDH, RAE mode, token-major q/k/v'}
    for row in rows.values():
        assert row['img_s'] > 0 and row['cfg_forward_img_s_per_nfe'] > 0
    # DecQ mode counts the query tokens' FLOPs on top of RAE mode's.
    assert rows['DiTDH, DecQ mode']['gflop_per_img'] >= \
        rows['DiTDH, RAE mode']['gflop_per_img']
    table = (out / 'benchmark_gpu.md').read_text()
    for what in ('hand-written', 'stage 2', 'stage 1', 'tools/sample.py',
                 'token-major'):
        assert what in table
    assert 'failed' not in table


def test_rae_code_row_uses_the_given_source(tmp_path):
    """--rae-src puts the public code's model beside ours, built with the
    recipe's flags and timed with the same step (a stand-in module here:
    the real code is not shipped)."""
    with fake_rae_src(tmp_path) as src:
        results = bench.main(['--dry-run', '--parts', 'matmul,headline',
                              '--headline-rows', 'rae-code', '--rae-src',
                              src, '--out-dir', str(tmp_path / 'out')])
    row, = results['headline']
    assert row['what'].startswith('public RAE code'), row
    assert row['img_s'] > 0 and row['cfg_forward_img_s_per_nfe'] > 0


def test_dry_run_of_the_stability_mode(tmp_path):
    results = bench.main(['--dry-run', '--stability', '--out-dir',
                          str(tmp_path)])
    saved = json.loads((tmp_path / 'bf16_stability.json').read_text())
    assert (tmp_path / 'bf16_stability.png').stat().st_size > 0
    for name in ('bf16', 'tf32'):
        assert len(saved[name]['loss']) == 3
        assert saved[name]['non_finite'] == 0
    comparison = results['comparison']
    assert comparison['first_loss']['bf16'] == pytest.approx(
        comparison['first_loss']['tf32'], rel=0.05)  # same seed and data
