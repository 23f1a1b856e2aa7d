"""Run ``tools/train.py`` / ``tools/test.py`` through the project's launch
scripts, ``tools/dist_train.sh`` / ``dist_test.sh``, as a user does: on one
node, or on several nodes simulated on this host (one script per node, with
``NNODES``, ``NODE_RANK``, ``MASTER_ADDR=127.0.0.1`` and one ``PORT``).

A simulated node ``r`` of ``k`` processes sees GPUs ``r*k .. r*k+k-1``
(``CUDA_VISIBLE_DEVICES``) and writes to its own work dir
(``WORK_DIR_node{r}`` for ``r > 0``), as a node without a shared file
system would: only node 0 (global rank 0) writes checkpoints.
With ``cpu=True`` no GPU is visible and the processes use gloo.
"""
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ('dist_train.sh', 'dist_test.sh')


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@dataclass
class LaunchResult:
    """What the nodes of one launch did (node 0 first)."""

    returncodes: List[Optional[int]]  # None: killed at the timeout
    seconds: float
    commands: List[str]
    logs: List[str]
    work_dirs: List[str]
    timed_out: bool = False
    tails: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(c == 0 for c in self.returncodes)


def node_work_dir(work_dir: str, node_rank: int) -> str:
    """Node 0 writes to ``work_dir``, node ``r`` to ``work_dir_node{r}``."""
    return work_dir if node_rank == 0 else f'{work_dir}_node{node_rank}'


def _visible_devices(node_rank: int, per_node: int) -> str:
    parent = os.environ.get('CUDA_VISIBLE_DEVICES')
    ids = (parent.split(',') if parent else
           [str(i) for i in range(per_node * (node_rank + 1))])
    mine = ids[node_rank * per_node:(node_rank + 1) * per_node]
    if len(mine) < per_node:
        raise ValueError(f'simulated node {node_rank} needs {per_node} GPUs '
                         f'but only {len(ids)} are visible in all')
    return ','.join(mine)


def node_env(nodes: int, node_rank: int, port: int, per_node: int,
             cpu: bool, rdzv: str = 'static') -> Dict[str, str]:
    """The environment of simulated node ``node_rank``."""
    env = dict(os.environ, NNODES=str(nodes), NODE_RANK=str(node_rank),
               MASTER_ADDR='127.0.0.1', PORT=str(port), RDZV_BACKEND=rdzv,
               HF_HUB_OFFLINE='1')
    # The launch script runs $PYTHON (else `python`): this interpreter.
    env['PYTHON'] = sys.executable
    env['PATH'] = osp.dirname(sys.executable) + os.pathsep + env.get(
        'PATH', '')
    env.setdefault('OMP_NUM_THREADS', '1')
    if cpu:
        env['CUDA_VISIBLE_DEVICES'] = ''
    elif nodes > 1:
        env['CUDA_VISIBLE_DEVICES'] = _visible_devices(node_rank, per_node)
    return env


def _tail(path: str, chars: int = 3000) -> str:
    with open(path, encoding='utf-8', errors='replace') as f:
        return f.read()[-chars:]


def launch_train(config: str, procs_per_node: int, work_dir: str,
                 log_dir: str, **kwargs) -> LaunchResult:
    """``tools/dist_train.sh config procs_per_node --work-dir ...`` (the
    keyword arguments are :func:`launch`'s)."""
    return launch('dist_train.sh', [config], procs_per_node, work_dir,
                  log_dir, **kwargs)


def launch(script: str, head: Sequence[str], procs_per_node: int,
           work_dir: str, log_dir: str, nodes: int = 1,
           args: Sequence[str] = (), timeout: float = 600, cpu: bool = False,
           rdzv: str = 'static') -> LaunchResult:
    """``tools/<script> *head procs_per_node --work-dir WORK *args`` on
    each of ``nodes`` simulated nodes; waits for all (``timeout`` seconds
    in all, then the launches are killed).

    Args:
        script: ``'dist_train.sh'`` or ``'dist_test.sh'``.
        head: the script's arguments before the process count (the config;
            for ``dist_test.sh`` also the checkpoint).
        rdzv: ``RDZV_BACKEND`` of the launch script (static or c10d).

    Raises:
        ValueError: another script, or ``nodes`` / ``procs_per_node`` < 1.
    """
    if script not in SCRIPTS:
        raise ValueError(f'script must be one of {SCRIPTS}, got {script!r}')
    if nodes < 1 or procs_per_node < 1:
        raise ValueError(f'nodes={nodes} and procs_per_node='
                         f'{procs_per_node} must be >= 1')
    os.makedirs(log_dir, exist_ok=True)
    port = free_port()
    procs, commands, logs, work_dirs = [], [], [], []
    start, timed_out = time.time(), False
    try:
        for rank in range(nodes):
            work = node_work_dir(work_dir, rank)
            cmd = ['bash', str(ROOT / 'tools' / script), *head,
                   str(procs_per_node), '--work-dir', work, *args]
            log = osp.join(log_dir, f'node{rank}.log')
            with open(log, 'w', encoding='utf-8') as f:
                f.write(' '.join(cmd) + '\n')
                f.flush()
                procs.append(subprocess.Popen(
                    cmd, cwd=str(ROOT), stdout=f, stderr=subprocess.STDOUT,
                    env=node_env(nodes, rank, port, procs_per_node, cpu,
                                 rdzv),
                    start_new_session=True))
            commands.append(' '.join(cmd[1:]))
            logs.append(log)
            work_dirs.append(work)
        for proc in procs:
            left = max(1.0, timeout - (time.time() - start))
            try:
                proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                timed_out = True
                break
    finally:
        for proc in procs:  # only the launches started here
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                timed_out = True
    codes = [None if timed_out and p.returncode < 0 else p.returncode
             for p in procs]
    result = LaunchResult(returncodes=codes,
                          seconds=round(time.time() - start, 1),
                          commands=commands, logs=logs, work_dirs=work_dirs,
                          timed_out=timed_out)
    if not result.ok:
        result.tails = [_tail(log) for log in logs]
    return result
