"""One GPU profile run: SDPA backends, DiT-DH-XL step variants and the
stage-1 step's phases, each result saved as soon as it is measured
(``profile_gpu.json`` / ``.md``), one failed part not losing the others."""
import json
import os
import os.path as osp
import tempfile
import time
import traceback
from typing import Sequence

import torch

from .attention_backends import bench_attention
from .dit_variants import bench_dit
from .plan import Plan, init_scope
from .report import profile_markdown
from .stage1_phases import bench_stage1

PARTS = ('attention', 'dit', 'stage1')
DIT_VARIANTS = ('rae:default', 'rae:torch', 'rae:budget=0.7', 'decq:default')
STAGE1_REGIONS = ('perceptual_loss.lpips', 'discriminator.heads')


def run_profile(plan: Plan, out_dir: str, env: dict,
                parts: Sequence[str] = PARTS,
                dit_variants: Sequence[str] = DIT_VARIANTS,
                stage1_regions: Sequence[str] = STAGE1_REGIONS,
                iters: int = 8) -> dict:
    """Profile ``parts`` (of :data:`PARTS`) at ``plan``'s batches (``iters``
    timed steps each); results (with ``env``) go to ``out_dir``."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f'parts: unknown {sorted(unknown)}; choose from '
                         f'{PARTS}')
    iters = 2 if plan.dry else iters
    os.makedirs(out_dir, exist_ok=True)
    results = dict(env=env)
    if plan.device == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
    init_scope()
    work = tempfile.mkdtemp(prefix='decq_profile_')

    def save():
        with open(osp.join(out_dir, 'profile_gpu.json'), 'w') as f:
            json.dump(results, f, indent=1)
        with open(osp.join(out_dir, 'profile_gpu.md'), 'w') as f:
            f.write(profile_markdown(results))

    jobs = [('attention', lambda: bench_attention(plan.dry, plan.batch2,
                                                  plan.batch1)),
            ('stage1', lambda: bench_stage1(plan, work, iters,
                                            list(stage1_regions))),
            ('dit', lambda: bench_dit(plan, list(dit_variants), iters))]
    for name, fn in jobs:
        if name not in parts:
            continue
        t0 = time.time()
        try:
            results[name] = fn()
        except Exception as err:  # keep the other parts
            traceback.print_exc()
            results[name] = dict(error=f'{type(err).__name__}: {err}'[:800])
        results[f'{name}_wall_s'] = round(time.time() - t0, 1)
        save()
    save()
    print(profile_markdown(results))
    return results
