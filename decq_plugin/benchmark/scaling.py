"""Training throughput against the number of GPUs: img/s per GPU read from
``tools/train.py``'s own log, for runs launched by ``tools/dist_train.sh``
(:mod:`.launch`), on one node or on several nodes simulated on this host,
with the configs and data of :mod:`.scaling_setup` (``dry_run``: shrunk
models on the CPU, gloo).

img/s per GPU = per-GPU batch / median iteration ``time`` (the first
``warmup`` iterations skipped: compilation, data-loader start); scaling =
img/s per GPU / that of the smallest count measured.
"""
import datetime
import json
import os
import os.path as osp
import statistics
from typing import Any, Dict, List, Sequence, Tuple

from .launch import launch_train
from .scaling_setup import prepare_config


def read_rows(work_dir: str) -> List[dict]:
    """The training rows of the newest ``*/vis_data/scalars.json`` under
    ``work_dir`` (one JSON object a line; validation rows have no
    ``iter``)."""
    found = sorted(
        osp.join(work_dir, d, 'vis_data', 'scalars.json')
        for d in (os.listdir(work_dir) if osp.isdir(work_dir) else [])
        if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    if not found:
        raise FileNotFoundError(f'no */vis_data/scalars.json under '
                                f'{work_dir!r}: did tools/train.py log?')
    rows = []
    with open(found[-1], encoding='utf-8') as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if 'iter' in row and 'time' in row:
                    rows.append(row)
    return rows


def throughput(rows: Sequence[dict], batch: int, warmup: int
               ) -> Dict[str, Any]:
    """img/s per GPU from logged iteration times (per-GPU ``batch``)."""
    times = [float(r['time']) for r in rows]
    steady = times[warmup:]
    if not steady:
        raise ValueError(f'{len(times)} iterations logged, all within the '
                         f'{warmup} warm-up iterations: raise iters')
    step = statistics.median(steady)
    memory = [r['memory'] for r in rows if 'memory' in r]
    return dict(iterations_timed=len(steady), step_s=round(step, 4),
                img_s_per_gpu=round(batch / step, 2),
                memory_mib=max(memory) if memory else None)


def measure(config: str, counts: Sequence[int], out_dir: str,
            nodes: Sequence[int] = (1, ), iters: int = 20, warmup: int = 5,
            dry_run: bool = False, train_args: Sequence[str] = (),
            timeout: float = 600, command: str = '') -> Dict[str, Any]:
    """Train ``config`` on every GPU count (x simulated node count that
    divides it) and return the results (see module); ``command`` is
    recorded with them."""
    import torch
    if iters <= warmup:
        raise ValueError(f'iters={iters} must exceed warmup={warmup}')
    device = ('cpu (gloo)' if dry_run or not torch.cuda.is_available() else
              torch.cuda.get_device_name(0))
    result: Dict[str, Any] = dict(
        date=datetime.datetime.now().isoformat(timespec='seconds'),
        torch=torch.__version__, device=device, config=config,
        command=command,
        iters=iters, warmup=warmup, dry_run=dry_run,
        train_args=list(train_args), runs=[])
    for gpus in counts:
        for n in nodes:
            if gpus % n:
                continue
            name = f'{gpus}gpu_{n}node'
            work = osp.join(out_dir, name)
            spec = prepare_config(config, work, gpus, iters, dry_run,
                                  data_gpus=max(counts))
            launched = launch_train(
                spec['config'], gpus // n, osp.join(work, 'train'),
                osp.join(work, 'logs'), nodes=n, args=list(train_args),
                timeout=timeout, cpu=dry_run)
            run: Dict[str, Any] = dict(
                gpus=gpus, nodes=n, batch_per_gpu=spec['batch'],
                stage=spec['stage'], returncodes=launched.returncodes,
                seconds=launched.seconds, commands=launched.commands)
            if launched.ok:
                run.update(throughput(read_rows(launched.work_dirs[0]),
                                      spec['batch'], warmup))
                run['img_s_total'] = round(run['img_s_per_gpu'] * gpus, 1)
            else:
                run['tails'] = launched.tails
            result['runs'].append(run)
    add_scaling(result['runs'])
    return result


def add_scaling(runs: List[Dict[str, Any]]) -> None:
    """``scaling``: img/s per GPU over that of the smallest GPU count."""
    done = [r for r in runs if r.get('img_s_per_gpu')]
    if not done:
        return
    base = min(done, key=lambda r: (r['gpus'], r['nodes']))
    for run in done:
        run['scaling'] = round(run['img_s_per_gpu'] / base['img_s_per_gpu'],
                               3)
        run['scaling_base_gpus'] = base['gpus']


def to_markdown(result: Dict[str, Any]) -> str:
    """A table in the style of ``docs/benchmarks/*.md``."""
    lines = [f"# Scaling: {osp.basename(result['config'])}, "
             f"{result['device']}, torch {result['torch']}, "
             f"{result['date']}", '',
             f"Command: `{result['command']}`", '',
             f"{result['iters']} iterations per run, the first "
             f"{result['warmup']} not timed; img/s per GPU = per-GPU batch / "
             'median iteration time from tools/train.py\'s log'
             + (' (dry run: shrunk models on the CPU)'
                if result['dry_run'] else '') + '.', '',
             '| GPUs | nodes | batch/GPU | step s | img/s per GPU | '
             'img/s total | scaling | memory MiB |',
             '|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in result['runs']:
        if 'img_s_per_gpu' not in r:
            lines.append(f"| {r['gpus']} | {r['nodes']} | "
                         f"{r['batch_per_gpu']} | failed (exit "
                         f"{r['returncodes']}) | | | | |")
            continue
        scaling = f"{100 * r['scaling']:.1f}% of {r['scaling_base_gpus']}"
        lines.append(
            f"| {r['gpus']} | {r['nodes']} | {r['batch_per_gpu']} | "
            f"{r['step_s']} | {r['img_s_per_gpu']} | {r['img_s_total']} | "
            f"{scaling} | {r['memory_mib'] or '-'} |")
    return '\n'.join(lines) + '\n'


def write_results(result: Dict[str, Any], out_dir: str,
                  name: str = 'scaling') -> Tuple[str, str]:
    """``out_dir/name.json`` and ``out_dir/name.md``; returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = (osp.join(out_dir, f'{name}.json'),
             osp.join(out_dir, f'{name}.md'))
    with open(paths[0], 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=1)
    with open(paths[1], 'w', encoding='utf-8') as f:
        f.write(to_markdown(result))
    return paths
