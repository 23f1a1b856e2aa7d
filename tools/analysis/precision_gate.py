"""The quality gate of FP8 training against bf16, through ``tools/train.py``
on the shipped recipes (synthetic data, random initialisation, same seed).

    source tools/analysis/gpu_setup.sh && \\
        python tools/analysis/precision_gate.py --stage 2 --steps 2000 \\
            --batch 32 --out-dir "$OUT" --commit HASH

One ``tools/train.py`` run per ``--precisions`` (default ``bf16,fp8``),
every step logged; the verdict: both runs logged every step and exited
cleanly, no skipped non-finite update, the mean judged loss (stage 2: the
loss; stage 1: L1 + LPIPS, without the adversarial term) of the last
``--tail`` steps of the second run within ``--tolerance`` of the first's.
``precision_gate_stage{N}.json`` holds the curves (loss, its components,
gradient norm) and the verdict, ``.png`` plots them side by side. A run
that does not fit one command: ``--precisions bf16`` first, then
``--precisions fp8 --against OUT/precision_gate_stageN.json`` (the first
run's record), or ``--parallel``: both runs at
once. ``--judge RECORD``: the verdict of a saved record again (e.g.
after a rule changed), without running. ``--dry-run``: the demo recipes on
the CPU (both precisions compute in float32 there), to check the script.
"""
import argparse
import json
import os
import sys
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from decq_plugin.utils.cli import doc_summary  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=doc_summary(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--stage', type=int, choices=(1, 2), default=2)
    p.add_argument('--steps', type=int, default=None,
                   help='training steps (default: 2000 for stage 2, 500 '
                   'for stage 1; a multiple of 100)')
    p.add_argument('--batch', type=int, default=None,
                   help='per-GPU batch (default: 32 for stage 2, 16 for '
                   'stage 1)')
    p.add_argument('--precisions', default='bf16,fp8')
    p.add_argument('--against', default=None,
                   help="an earlier record of this tool whose runs come "
                   "first (the reference)")
    p.add_argument('--judge', default=None, metavar='RECORD',
                   help='judge a record of this tool again (its curves, '
                   "this version's rules, --tail, --tolerance) and write "
                   'the verdict and plot to --out-dir; runs nothing')
    p.add_argument('--tail', type=int, default=200,
                   help='steps whose mean loss is compared')
    p.add_argument('--tolerance', type=float, default=0.01)
    p.add_argument('--parallel', action='store_true',
                   help="this call's runs at the same time on one GPU "
                   '(their curves do not depend on timing, up to rounding)')
    p.add_argument('--no-compile', action='store_true')
    p.add_argument('--timeout', type=int, default=3600,
                   help='seconds allowed to each tools/train.py run')
    p.add_argument('--out-dir', default=os.environ.get('OUT', '.'))
    p.add_argument('--commit', default=None,
                   help="the commit whose files run (default: git's HEAD)")
    p.add_argument('--dry-run', action='store_true',
                   help='the demo recipes on the CPU, 2 steps per run')
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = 2 if args.dry_run else (2000 if args.stage == 2
                                             else 500)
    if args.batch is None:
        args.batch = 2 if args.dry_run else (32 if args.stage == 2 else 16)
    if args.tail < 1:
        p.error('--tail: at least 1 step')
    args.precisions = [x for x in args.precisions.split(',') if x]
    if not args.precisions:
        p.error('--precisions: name at least one')
    if len(set(args.precisions)) < len(args.precisions):
        p.error('--precisions: each at most once (one work folder each)')
    return args


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from decq_plugin.benchmark.gpu import env_info
    from decq_plugin.benchmark.gpu.precision_gate import (run_gate,
                                                          write_verdict)
    from decq_plugin.benchmark.gpu.provenance import provenance
    if args.judge:
        with open(args.judge) as f:
            record = json.load(f)
        os.makedirs(args.out_dir, exist_ok=True)
        record['judged_again'] = dict(command=' '.join(argv),
                                      **provenance(args.commit))
        if 'gate' in record:  # the verdict given when the runs ran
            record.setdefault('first_verdict', record.pop('gate'))
        return write_verdict(record, args.out_dir, args.tail, args.tolerance)
    earlier = None
    if args.against:
        with open(args.against) as f:
            earlier = json.load(f)
    os.makedirs(args.out_dir, exist_ok=True)
    env = dict(env_info(argv, script='tools/analysis/precision_gate.py'),
               **provenance(args.commit))
    return run_gate(args.stage, args.out_dir, env, args.steps, args.batch,
                    args.precisions, args.tail, args.tolerance,
                    compile=not (args.no_compile or args.dry_run),
                    dry=args.dry_run, timeout=args.timeout, earlier=earlier,
                    parallel=args.parallel)


if __name__ == '__main__':
    main()
