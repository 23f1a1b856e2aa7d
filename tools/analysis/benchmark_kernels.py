"""The fused Triton kernels of ``decq_plugin.ops`` on a GPU: each op in
isolation beside the expression it replaces (eager, and compiled by
Inductor as ``--compile`` does today), then the DiT-DH-XL train step with
and without them.

    source tools/analysis/gpu_setup.sh && \\
        python tools/analysis/benchmark_kernels.py --out-dir "$OUT"

Parts (``--parts``):

* ``ops``: forward + backward of RMSNorm + adaLN modulate, residual + norm
  + modulate (body: one condition per sample; head: per token), SwiGLU and
  RoPE with the q/k/v layout change, at DiT-DH-XL's DecQ-mode shapes
  (``--batch``); median ms, fused / Inductor speed-up, effective GB/s;
* ``step``: the hand-written DiT-DH-XL train step of
  ``tools/analysis/profile_gpu.py`` (bf16 autocast, blocks compiled, fused
  AdamW) for each of ``--variants`` (``MODE[:OPT+OPT]``, ``fused`` swaps
  in ``FusedAdaLNBlock``, ``fp8`` converts the large linears to torchao's
  float8 training, see decq_plugin/models/fp8.py), at ``--step-batch``:
  img/s, peak memory; ``--profile-variants`` adds the kernel-class table
  (``torch.profiler``, two steps) and the CFG forward of those variants.
  The variant ``rae-code`` is the public RAE code's DiT-DH-XL (its ``src/``
  given by ``--rae-src``, compiled whole as its trainer does) in the same
  step and process, the baseline of the speed targets;
* ``attention``: SDPA forward + backward at the body's and the head's
  shapes: RAE mode's 256 tokens, DecQ mode's 264 in one call and split
  after the patches (``qsplit``), cuDNN and flash.

Results: ``benchmark_kernels.json`` / ``.md`` in ``--out-dir``, rewritten
after every row (a run cut short keeps what it measured). ``--dry-run``
runs both parts on the CPU with tiny shapes (the ops fall back to their
reference expressions there), to check the script.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from decq_plugin.utils.cli import doc_summary  # noqa: E402

PARTS = ('ops', 'attention', 'step')


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=doc_summary(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out-dir', default=os.environ.get('OUT', '.'))
    p.add_argument('--parts', default='ops,attention,step',
                   help=f'comma-separated, from {PARTS}')
    p.add_argument('--batch', type=int, default=256,
                   help='batch of the isolated ops (tokens: batch x 264)')
    p.add_argument('--variants', default='decq,decq:fused,rae,rae:fused',
                   help='train-step variants (profile_gpu.py syntax); '
                   '"rae-code": the public RAE code\'s model (needs '
                   '--rae-src)')
    p.add_argument('--rae-src', default=None,
                   help="the public RAE code's src/ folder (for the "
                   'rae-code variant; not shipped)')
    p.add_argument('--profile-variants', default='',
                   help='variants (of --variants) that also get the kernel '
                   'table and the CFG forward')
    p.add_argument('--step-batch', type=int, default=256)
    p.add_argument('--iters', type=int, default=10,
                   help='timed steps per variant (ops: twice as many)')
    p.add_argument('--commit', default=None,
                   help="the commit whose files run (default: git's HEAD; "
                   'the device machine\'s .git may be stale); the record '
                   'also gets the tree hash of the files as run')
    p.add_argument('--dry-run', action='store_true',
                   help='CPU, tiny shapes: checks the script')
    args = p.parse_args(argv)
    unknown = set(args.parts.split(',')) - set(PARTS)
    if unknown:
        p.error(f'--parts: unknown {sorted(unknown)}; choose from {PARTS}')
    if 'rae-code' in args.variants.split(',') and not args.rae_src:
        p.error('--variants rae-code needs --rae-src (the public RAE '
                "code's src/ folder)")
    stray = set(filter(None, args.profile_variants.split(','))) - set(
        args.variants.split(','))
    if stray:
        p.error(f'--profile-variants: {sorted(stray)} not in --variants')
    return args


def write_report(result: dict, out_dir: str) -> None:
    with open(osp.join(out_dir, 'benchmark_kernels.json'), 'w') as f:
        json.dump(result, f, indent=1)
    lines = [f"# Fused kernels ({result['date']}, {result['gpu']}, torch "
             f"{result['torch']}, commit {result['commit']}, tree "
             f"{result['tree']})", '', f"`{result['command']}`", '']
    if result.get('ops'):
        lines += ['| op (fwd + bwd) | eager ms | Inductor ms | fused ms | '
                  'fused / Inductor speed | fused GB/s |',
                  '|---|---:|---:|---:|---:|---:|']
        for r in result['ops']:
            if 'error' in r:
                lines.append(f"| {r['op']} | error: {r['error'][:80]} |||||")
                continue
            lines.append(f"| {r['op']} | {r['eager_ms']} | "
                         f"{r['inductor_ms']} | {r['fused_ms']} | "
                         f"x{r['fused_vs_inductor']} | {r['fused_gb_s']} |")
        lines.append('')
    if result.get('attention'):
        lines += ['| attention (fwd + bwd) | backend | layout | '
                  '[B, H, N, d] | ms | max error out / dq vs fp32 |',
                  '|---|---|---|---|---:|---:|']
        for r in result['attention']:
            lines.append(f"| {r['part']} | {r['backend']} | {r['layout']} | "
                         f"{r['shape']} | {r.get('ms', r.get('error'))} | "
                         f"{r.get('out_err')} / {r.get('dq_err')} |")
        lines.append('')
    if result.get('step'):
        lines += ['| train step variant | batch | img/s | peak GiB | '
                  'first step s | CFG forward img/s per NFE |',
                  '|---|---:|---:|---:|---:|---:|']
        for r in result['step']:
            if 'error' in r:
                lines.append(f"| {r['variant']} | error: "
                             f"{r['error'][:80]} |||||")
                continue
            lines.append(f"| {r['variant']} | {r['batch']} | {r['img_s']} | "
                         f"{r['peak_gib']} | {r['first_step_s']} | "
                         f"{r.get('cfg_forward_img_s_per_nfe', '')} |")
    with open(osp.join(out_dir, 'benchmark_kernels.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    import torch

    from decq_plugin.benchmark.gpu import Plan, env_info
    from decq_plugin.benchmark.gpu.dit_variants import (parse_variant,
                                                        run_dit_variant,
                                                        run_rae_code)
    from decq_plugin.benchmark.gpu.kernel_bench import (bench_attention,
                                                        bench_ops)
    from decq_plugin.benchmark.gpu.provenance import provenance
    os.makedirs(args.out_dir, exist_ok=True)
    plan = Plan(dry_run=args.dry_run, quick=True, batch2=args.step_batch)
    result = dict(env_info(argv, script='tools/analysis/benchmark_kernels.py'),
                  **provenance(args.commit), ops=[], step=[])
    parts = args.parts.split(',')
    if 'ops' in parts:
        t0 = time.time()
        result['ops'] = bench_ops(4 if args.dry_run else args.batch,
                                  plan.device, iters=2 * args.iters,
                                  dry=args.dry_run)
        result['ops_seconds'] = round(time.time() - t0, 1)
        write_report(result, args.out_dir)
    if 'attention' in parts:
        result['attention'] = bench_attention(
            4 if args.dry_run else args.batch, plan.device,
            iters=2 * args.iters, dry=args.dry_run)
        write_report(result, args.out_dir)
    if 'step' in parts:
        profiled = set(filter(None, args.profile_variants.split(',')))
        for spec in args.variants.split(','):
            try:
                if spec == 'rae-code':
                    row = run_rae_code(plan, args.rae_src, args.iters,
                                       with_profile=spec in profiled)
                else:
                    row = run_dit_variant(parse_variant(spec), plan,
                                          args.iters,
                                          with_profile=spec in profiled)
            except Exception as err:  # keep the other variants' numbers
                row = dict(variant=spec,
                           error=f'{type(err).__name__}: {err}'[:500])
            if plan.device == 'cuda':
                torch.cuda.empty_cache()
            result['step'].append(row)
            print('step', json.dumps(row), flush=True)
            write_report(result, args.out_dir)
    write_report(result, args.out_dir)
    return result


if __name__ == '__main__':
    main()
