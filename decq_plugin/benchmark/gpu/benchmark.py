"""One GPU benchmark run: the parts in order, each result saved as soon as
it is measured (``benchmark_gpu.json`` / ``.md``), one failed part not
losing the others."""
import json
import os
import os.path as osp
import tempfile
import time
from typing import Optional, Sequence

import torch

from .dit_step import HEADLINE_ROWS, bench_headline, bench_matmul, bench_step
from .plan import Plan, init_scope
from .report import benchmark_markdown
from .tool_runs import run_sample_tool, run_train_tool

PARTS = ('matmul', 'train1', 'headline', 'step', 'train2', 'sample')


def run_benchmark(plan: Plan, out_dir: str, env: dict,
                  parts: Sequence[str] = PARTS, timeout: int = 420,
                  rae_src: Optional[str] = None,
                  headline_rows: Sequence[str] = HEADLINE_ROWS) -> dict:
    """Measure ``parts`` (of :data:`PARTS`) as ``plan`` sizes them; results
    (with ``env``: command, date, torch, GPU) go to ``out_dir``.

    ``timeout``: seconds allowed to each ``tools/train.py`` / sampling
    process; ``rae_src``: the public RAE code's ``src/`` folder (adds its
    DiT-DH-XL to the headline rows)."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f'parts: unknown {sorted(unknown)}; choose from '
                         f'{PARTS}')
    os.makedirs(out_dir, exist_ok=True)
    results = dict(env=env, plan=vars(plan))
    if plan.device == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
    work = tempfile.mkdtemp(prefix='decq_bench_')
    init_scope()

    def save():
        with open(osp.join(out_dir, 'benchmark_gpu.json'), 'w') as f:
            json.dump(results, f, indent=1)
        with open(osp.join(out_dir, 'benchmark_gpu.md'), 'w') as f:
            f.write(benchmark_markdown(results))

    def matmul_ceiling() -> Optional[float]:
        return results.get('matmul', {}).get('tflops')

    steps = [('matmul', lambda: bench_matmul(plan)),
             ('train1', lambda: run_train_tool(plan, 1, work, timeout)),
             ('headline', lambda: bench_headline(
                 plan, matmul_ceiling(), rae_src, headline_rows)),
             ('step', lambda: bench_step(plan, matmul_ceiling())),
             ('train2', lambda: run_train_tool(plan, 2, work, timeout)),
             ('sample', lambda: run_sample_tool(plan, work, timeout))]
    for name, fn in steps:
        if name not in parts:
            continue
        t0 = time.time()
        try:
            results[name] = fn()
        except Exception as err:  # keep the other parts' numbers
            results[name] = dict(error=f'{type(err).__name__}: {err}')
        results[f'{name}_wall_s'] = round(time.time() - t0, 1)
        if isinstance(results[name], dict):
            print(name, json.dumps({k: v for k, v in results[name].items()
                                    if k not in ('tail', 'step_times',
                                                 'data_times')}), flush=True)
            if 'tail' in results[name]:
                print(results[name]['tail'], flush=True)
        save()
    ceiling = results.get('matmul', {}).get('tflops')
    flop = results.get('step', {}).get('gflop_per_img')
    if ceiling and flop and results.get('train2', {}).get('img_s'):
        results['train2']['mfu'] = round(
            results['train2']['img_s'] * flop * 1e9 / (ceiling * 1e12), 3)
    if results.get('step', {}).get('img_s') and \
            results.get('train2', {}).get('img_s'):
        results['train2_vs_step'] = round(
            results['train2']['img_s'] / results['step']['img_s'], 3)
    save()
    print(benchmark_markdown(results))
    return results
