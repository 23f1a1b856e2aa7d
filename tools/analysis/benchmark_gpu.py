"""What users get on one GPU, in one command: the hand-written compiled step,
``tools/train.py`` (stage 2 and stage 1, throughput read from its own log),
``tools/sample.py`` img/s, the measured bf16 matmul ceiling and MFU.

    bash tools/analysis/gpu_setup.sh && \\
        python tools/analysis/benchmark_gpu.py --out-dir "$OUT" [--quick]
    python tools/analysis/benchmark_gpu.py --stability --out-dir "$OUT"
    python tools/analysis/benchmark_gpu.py --dry-run --out-dir /tmp/b  # CPU

Parts (``--parts``, default all):

* ``matmul``: bf16 GEMM rate (8192^3), the MFU denominator;
* ``step``: DiT-DH-XL DecQ train step written by hand (flow-matching loss,
  fused AdamW, grad clip 1.0, bf16 autocast, the same regional compilation
  as ``model.compile=True``) at the per-GPU batch of ``tools/train.py``,
  its counted FLOP/img and MFU, and the CFG forward (2 x batch) per NFE;
* ``train2``: ``tools/train.py`` on the stage-2 XL DecQ config over
  synthetic latent shards, ``--compile``, bf16 (the config's precision);
* ``train1``: ``tools/train.py`` on the stage-1 DecQ config with every loss
  on from step 0 over synthetic JPEGs (random VFM / LPIPS trunk /
  discriminator weights: none can be downloaded there), ``--compile``;
* ``sample``: ``tools/sample.py``'s ``main`` on the CFG config (random
  weights), 50 Euler steps with decoding and PNG writing, ``--compile``,
  bf16; a first call compiles, the second is timed.

``--stability``: DiT-DH-S for ``--stability-steps`` (2000) steps in bf16 and
in TF32 from the same seed on structured synthetic latents; both loss curves
(JSON + PNG), non-finite counts and how far the curves are apart.

Results: ``benchmark_gpu.json`` / ``.md`` (or ``bf16_stability.*``) in
``--out-dir`` (``$OUT`` on the device machine; copy them to
``docs/benchmarks/``), with the command, date, torch and GPU.
``--dry-run`` runs every part on the CPU with tiny models and the demo
configs, to check the script itself (tests/tools/test_benchmark_gpu.py).

The code lives in ``decq_plugin.benchmark.gpu`` (``run_benchmark``,
``run_stability``); this script parses the arguments and calls it.
"""
import argparse
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from decq_plugin.utils.cli import doc_summary  # noqa: E402

# The names below are also what tools/analysis/gpu_smoke.py uses.
from decq_plugin.benchmark.gpu import (Plan, env_info,  # noqa: E402,F401
                                       latent_shapes, parse_train_log,
                                       run_benchmark, run_stability,
                                       write_jpegs, write_latent_shards)
from decq_plugin.benchmark.gpu.benchmark import PARTS  # noqa: E402
from decq_plugin.benchmark.gpu.dit_step import HEADLINE_ROWS  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc_summary(__doc__))
    p.add_argument('--out-dir', default=os.environ.get('OUT') or
                   osp.join(ROOT, 'docs', 'benchmarks'))
    p.add_argument('--parts', default=','.join(PARTS))
    p.add_argument('--quick', action='store_true',
                   help='fewer iterations and samples (about half the time)')
    p.add_argument('--dry-run', action='store_true',
                   help='CPU, tiny models, demo configs: checks the script')
    p.add_argument('--stability', action='store_true',
                   help='the bf16-vs-TF32 DiT-DH-S loss-curve run instead')
    p.add_argument('--stability-steps', type=int, default=2000)
    p.add_argument('--stability-batch', type=int, default=64)
    p.add_argument('--batch2', type=int, default=128,
                   help='per-GPU batch of stage 2 (and the hand-written step)')
    p.add_argument('--batch1', type=int, default=64,
                   help='per-GPU batch of stage 1')
    p.add_argument('--step-batch', type=int, default=256,
                   help='batch of the headline DiT-DH-XL step rows')
    p.add_argument('--rae-src', default=None,
                   help="the public RAE code's src/ folder: adds its "
                   'DiT-DH-XL to the headline rows (same step, same run)')
    p.add_argument('--headline-rows', default=','.join(HEADLINE_ROWS),
                   help='rows of the headline part (comma-separated)')
    p.add_argument('--num-samples', type=int, default=None)
    p.add_argument('--timeout', type=int, default=420,
                   help='seconds allowed to each tools/train.py run')
    args = p.parse_args(argv)
    unknown = set(args.parts.split(',')) - set(PARTS)
    if unknown:
        p.error(f'--parts: unknown {sorted(unknown)}; choose from {PARTS}')
    return args


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    env = env_info(argv)
    if args.stability:
        return run_stability(args.out_dir, env, dry=args.dry_run,
                             steps=args.stability_steps,
                             batch=args.stability_batch)
    plan = Plan(dry_run=args.dry_run, quick=args.quick, batch2=args.batch2,
                batch1=args.batch1, step_batch=args.step_batch,
                num_samples=args.num_samples)
    return run_benchmark(plan, args.out_dir, env,
                         parts=args.parts.split(','), timeout=args.timeout,
                         rae_src=args.rae_src,
                         headline_rows=args.headline_rows.split(','))


if __name__ == '__main__':
    main()
