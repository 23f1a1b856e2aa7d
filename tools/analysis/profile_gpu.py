"""Where the GPU time of a training step goes: kernel classes, phases and
variants of the DiT-DH-XL step and of the stage-1 tokenizer step.

    source tools/analysis/gpu_setup.sh && \\
        python tools/analysis/profile_gpu.py --out-dir "$OUT"
    python tools/analysis/profile_gpu.py --dry-run --out-dir /tmp/p  # CPU

Parts (``--parts``, default all):

* ``attention``: SDPA forward / forward+backward per backend (flash,
  memory-efficient, cuDNN) on the shapes the models use;
* ``dit``: the hand-written DiT-DH-XL train step (flow matching, fused
  AdamW, clip 1.0, bf16, compiled regions) in variants (``--dit-variants``,
  ``MODE:OPTION+OPTION``; MODE ``rae`` or ``decq``; options ``default``,
  ``cudnn``/``flash``/``efficient`` (SDPA backend first in priority;
  ``DiTDH`` puts cuDNN first by default), ``torch`` (PyTorch's own order),
  ``budget=X`` (``model.compile``'s ``memory_budget``), ``ckpt=K``
  (recompute the first K body blocks), ``whole`` (compile the whole model
  instead of its blocks), ``bshd`` (token-major q/k/v layout into SDPA),
  ``cdt`` (inductor's coordinate-descent tuning of its kernels),
  ``autotune`` (``mode='max-autotune-no-cudagraphs'``)); img/s, peak
  memory, and for the first variant of each mode a profiler table of kernel
  classes (GEMM, attention, fused elementwise, optimizer, ...) and the CFG
  forward;
* ``stage1``: the stage-1 DecQ config's own ``train_step`` (built the way
  ``tools/train.py --compile`` builds it, every loss on) timed per phase
  (encode, decode, LPIPS, discriminator, autograd.grad, backward, optimizer
  steps; a device sync at each phase edge), then the kernel classes of
  undisturbed steps, then img/s as more regions are compiled in turn
  (``--stage1-regions``).

Results: ``profile_gpu.json`` and ``profile_gpu.md`` in ``--out-dir``.

The code lives in ``decq_plugin.benchmark.gpu`` (``run_profile``); this
script parses the arguments and calls it.
"""
import argparse
import os
import os.path as osp
import sys
import time  # noqa: F401  (tests fake its clock for PhaseTimer)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from decq_plugin.utils.cli import doc_summary  # noqa: E402

from decq_plugin.benchmark.gpu import Plan, env_info  # noqa: E402
from decq_plugin.benchmark.gpu.dit_variants import parse_variant  # noqa
from decq_plugin.benchmark.gpu.kernel_profile import kernel_class  # noqa
from decq_plugin.benchmark.gpu.profiling import (  # noqa: E402
    DIT_VARIANTS, PARTS, STAGE1_REGIONS, run_profile)
from decq_plugin.benchmark.gpu.stage1_phases import PhaseTimer  # noqa


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc_summary(__doc__))
    p.add_argument('--out-dir', default=os.environ.get('OUT') or '.')
    p.add_argument('--parts', default=','.join(PARTS))
    p.add_argument('--dit-variants', default=','.join(DIT_VARIANTS))
    p.add_argument('--batch2', type=int, default=256)
    p.add_argument('--batch1', type=int, default=64)
    p.add_argument('--stage1-regions',
                   default=','.join(STAGE1_REGIONS),
                   help='regions compiled one after the other on top of '
                   "the config's (comma-separated; empty: none)")
    p.add_argument('--iters', type=int, default=8)
    p.add_argument('--dry-run', action='store_true',
                   help='CPU, tiny models, demo configs: checks the script')
    args = p.parse_args(argv)
    unknown = set(args.parts.split(',')) - set(PARTS)
    if unknown:
        p.error(f'--parts: unknown {sorted(unknown)}; choose from {PARTS}')
    return args


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    plan = Plan(dry_run=args.dry_run, quick=True, batch2=args.batch2,
                batch1=args.batch1)
    env = env_info(argv, script='tools/analysis/profile_gpu.py')
    return run_profile(plan, args.out_dir, env, parts=args.parts.split(','),
                       dit_variants=args.dit_variants.split(','),
                       stage1_regions=args.stage1_regions.split(','),
                       iters=args.iters)


if __name__ == '__main__':
    main()
