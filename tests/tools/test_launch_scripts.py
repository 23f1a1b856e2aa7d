"""The launch scripts turn the environment (NNODES, NODE_RANK, MASTER_ADDR,
PORT, RDZV_BACKEND, GPUS ...) into torchrun's and srun's arguments.

A fake ``python`` / ``srun`` first on ``PATH`` records its arguments (and
``MASTER_PORT``), so nothing is launched; the real two-node launch is in
tests/recipes/test_multinode.py.
"""
import os
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECORDER = ('#!/bin/sh\n'
            'printf "%s\\n" "MASTER_PORT=$MASTER_PORT" "$@" > "$0.args"\n')


def _run(tmp_path, script: str, args: List[str], env: Dict[str, str],
         fake: str) -> Tuple[int, List[str], str]:
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / fake
    exe.write_text(RECORDER)
    exe.chmod(0o755)
    full = {k: v for k, v in os.environ.items()
            if k not in ('NNODES', 'NODE_RANK', 'MASTER_ADDR', 'PORT',
                         'MASTER_PORT', 'GPUS', 'GPUS_PER_NODE',
                         'RDZV_BACKEND', 'RDZV_ID', 'PYTHON')}
    full.update(env, PATH=f'{bin_dir}:{os.environ["PATH"]}')
    proc = subprocess.run(['bash', str(ROOT / 'tools' / script), *args],
                          env=full, capture_output=True, text=True,
                          timeout=60)
    recorded = Path(f'{exe}.args')
    lines = recorded.read_text().splitlines() if recorded.exists() else []
    return proc.returncode, lines, proc.stderr


def test_dist_train_two_nodes_static(tmp_path):
    rc, argv, err = _run(tmp_path, 'dist_train.sh', ['cfg.py', '4', '--amp'],
                         dict(NNODES='2', NODE_RANK='1',
                              MASTER_ADDR='10.0.0.1', PORT='29555'),
                         'python')
    assert rc == 0, err
    assert argv[1:3] == ['-m', 'torch.distributed.run']
    for arg in ('--nnodes=2', '--nproc-per-node=4', '--node-rank=1',
                '--master-addr=10.0.0.1', '--master-port=29555'):
        assert arg in argv
    assert argv[-4:] == ['cfg.py', '--launcher', 'pytorch', '--amp']
    assert argv[-5].endswith('tools/train.py')


def test_dist_test_two_nodes_c10d(tmp_path):
    rc, argv, err = _run(tmp_path, 'dist_test.sh', ['cfg.py', 'ck.pth', '2'],
                         dict(NNODES='2', NODE_RANK='0', RDZV_BACKEND='c10d',
                              MASTER_ADDR='node0', PORT='29556'), 'python')
    assert rc == 0, err
    for arg in ('--nnodes=2', '--nproc-per-node=2', '--rdzv-backend=c10d',
                '--rdzv-endpoint=node0:29556', '--rdzv-id=decq'):
        assert arg in argv
    assert not any(a.startswith('--master-addr') for a in argv)
    assert argv[-4:] == ['cfg.py', 'ck.pth', '--launcher', 'pytorch']


@pytest.mark.parametrize('env,message', [
    (dict(NNODES='2'), 'set MASTER_ADDR'),
    (dict(NNODES='2', NODE_RANK='2', MASTER_ADDR='a'), 'NODE_RANK=2'),
    (dict(RDZV_BACKEND='etcd'), 'RDZV_BACKEND=etcd'),
])
def test_dist_train_refuses_bad_environment(tmp_path, env, message):
    rc, argv, err = _run(tmp_path, 'dist_train.sh', ['cfg.py', '1'], env,
                         'python')
    assert rc == 2 and message in err and argv == []


def test_python_names_the_interpreter(tmp_path):
    fake = tmp_path / 'bin' / 'python3.99'
    rc, argv, err = _run(tmp_path, 'dist_train.sh', ['cfg.py', '1'],
                         dict(PYTHON=str(fake)), 'python3.99')
    assert rc == 0 and argv[1:3] == ['-m', 'torch.distributed.run'], err


def test_one_node_defaults(tmp_path):
    rc, argv, err = _run(tmp_path, 'dist_train.sh', ['cfg.py', '8'], {},
                         'python')
    assert rc == 0, err
    for arg in ('--nnodes=1', '--node-rank=0', '--master-addr=127.0.0.1',
                '--master-port=29500', '--nproc-per-node=8'):
        assert arg in argv


@pytest.mark.parametrize('script', ['slurm_train.sh', 'slurm_test.sh'])
def test_slurm_takes_the_same_variables(tmp_path, script):
    rc, argv, err = _run(tmp_path, script, ['part', 'job', 'cfg.py', 'x'],
                         dict(NNODES='2', GPUS_PER_NODE='4', PORT='29557'),
                         'srun')
    assert rc == 0, err
    assert argv[0] == 'MASTER_PORT=29557'
    for arg in ('--nodes=2', '--ntasks=8', '--ntasks-per-node=4',
                '--gres=gpu:4', '--kill-on-bad-exit=1'):
        assert arg in argv
    assert '--launcher=slurm' in argv


def test_slurm_refuses_inconsistent_counts(tmp_path):
    rc, argv, err = _run(tmp_path, 'slurm_train.sh',
                         ['part', 'job', 'cfg.py', 'w'],
                         dict(NNODES='2', GPUS_PER_NODE='4', GPUS='6'),
                         'srun')
    assert rc == 2 and 'NNODES x GPUS_PER_NODE' in err and argv == []
