"""The scaling run (tools/analysis/scaling.py, decq_plugin/benchmark/
scaling.py): img/s per GPU from tools/train.py's own log, launched through
tools/dist_train.sh on one node or on two nodes simulated on this host; the
dry run (shrunk models, CPU, gloo) end to end."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from decq_plugin.benchmark import scaling
from decq_plugin.benchmark.launch import node_env

ROOT = Path(__file__).resolve().parents[2]
STAGE1 = 'configs/decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py'  # noqa: E501
STAGE2 = 'configs/ldm/ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_8xb128-80e_in1k-256.py'  # noqa: E501


def _tool():
    spec = importlib.util.spec_from_file_location(
        'decq_analysis_scaling', ROOT / 'tools/analysis/scaling.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scalars(work: Path, stamp: str, rows) -> None:
    folder = work / stamp / 'vis_data'
    folder.mkdir(parents=True)
    (folder / 'scalars.json').write_text(
        ''.join(json.dumps(r) + '\n' for r in rows))


def test_throughput_from_the_newest_log(tmp_path):
    _scalars(tmp_path, '20260101_000000', [dict(iter=1, time=9.0)])
    _scalars(tmp_path, '20260102_000000', [
        dict(iter=1, time=5.0, memory=10), dict(iter=2, time=0.5),
        dict(iter=3, time=0.25, memory=12), dict(iter=4, time=0.5),
        dict(PSNR=1.0, time=0.1, step=1)])  # a validation row: no iter
    rows = scaling.read_rows(str(tmp_path))
    assert [r['iter'] for r in rows] == [1, 2, 3, 4]
    out = scaling.throughput(rows, batch=64, warmup=1)
    assert out == dict(iterations_timed=3, step_s=0.5, img_s_per_gpu=128.0,
                       memory_mib=12)
    with pytest.raises(ValueError, match='raise iters'):
        scaling.throughput(rows, batch=64, warmup=4)
    with pytest.raises(FileNotFoundError, match='did tools/train.py log'):
        scaling.read_rows(str(tmp_path / 'none'))


def test_scaling_and_table():
    runs = [dict(gpus=2, nodes=1, batch_per_gpu=64, step_s=0.5,
                 img_s_per_gpu=96.0, img_s_total=192.0, memory_mib=None),
            dict(gpus=1, nodes=1, batch_per_gpu=64, step_s=0.5,
                 img_s_per_gpu=100.0, img_s_total=100.0, memory_mib=5),
            dict(gpus=2, nodes=2, batch_per_gpu=64, returncodes=[1, 0])]
    scaling.add_scaling(runs)
    assert runs[0]['scaling'] == 0.96 and runs[1]['scaling'] == 1.0
    assert 'scaling' not in runs[2]
    table = scaling.to_markdown(dict(
        config='x/c.py', device='H200', torch='2', date='d', command='cmd',
        iters=20, warmup=5, dry_run=False, runs=runs))
    assert '| 2 | 1 | 64 | 0.5 | 96.0 | 192.0 | 96.0% of 1 | - |' in table
    assert '| 2 | 2 | 64 | failed (exit [1, 0]) |' in table


def test_node_env_gives_each_simulated_node_its_gpus(monkeypatch):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '4,5,6,7')
    env = node_env(2, 1, 1234, 2, cpu=False)
    assert env['CUDA_VISIBLE_DEVICES'] == '6,7'
    assert (env['NNODES'], env['NODE_RANK'], env['PORT'],
            env['MASTER_ADDR']) == ('2', '1', '1234', '127.0.0.1')
    assert env['PYTHON'] == sys.executable
    assert node_env(2, 0, 1, 2, cpu=True)['CUDA_VISIBLE_DEVICES'] == ''
    with pytest.raises(ValueError, match='needs 4 GPUs'):
        node_env(2, 1, 1, 4, cpu=False)


def test_arguments_after_double_dash_go_to_train():
    args = _tool().parse_args(['--gpus', '1', '8', '--', '--compile',
                               '--precision', 'bf16'])
    assert args.gpus == [1, 8]
    assert args.train_args == ['--compile', '--precision', 'bf16']


@pytest.mark.recipe
def test_dry_run_both_stages_and_two_nodes(tmp_path):
    tool = _tool()
    out = tmp_path / 'out'
    common = ['--iters', '3', '--warmup', '1', '--dry-run', '--out-dir',
              str(out)]
    stages = tool.main(['--configs', STAGE1, STAGE2, '--gpus', '1'] + common)
    nodes = tool.main(['--configs', STAGE1, '--gpus', '2', '--nodes', '2']
                      + common)
    runs = [r for result in stages + nodes for r in result['runs']]
    assert [(r['stage'], r['gpus'], r['nodes']) for r in runs] == [
        ('stage1', 1, 1), ('stage2', 1, 1), ('stage1', 2, 2)]
    for run in runs:
        assert run['returncodes'] == [0] * run['nodes'], run.get('tails')
        assert run['iterations_timed'] == 2 and run['img_s_per_gpu'] > 0
        assert all('tools/dist_train.sh' in c for c in run['commands'])
    # the simulated second node ran its own dist_train.sh with NODE_RANK=1
    assert len(runs[2]['commands']) == 2
    saved = json.loads((out / f'scaling_{Path(STAGE1).stem}.json')
                       .read_text())
    assert [r['nodes'] for r in saved['runs']] == [2]
    table = (out / f'scaling_{Path(STAGE2).stem}.md').read_text()
    assert table.count('\n| 1 | 1 | 2 |') == 1
    assert 'python tools/analysis/scaling.py --configs' in table
