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
  ``cudnn``/``flash``/``efficient`` (SDPA backend first in priority),
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
"""
import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import os.path as osp
import sys
import tempfile
import time
from collections import defaultdict
from typing import Callable, Dict, List, Optional

import torch
from decq_plugin.utils.cli import doc_summary  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

PARTS = ('attention', 'dit', 'stage1')
DIT_VARIANTS = 'rae:default,rae:cudnn,rae:budget=0.7,decq:default'


def _load_script(path: str, name: str):
    """A script of this repository (tools/ is no package) as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_script(osp.join(osp.dirname(__file__), 'benchmark_gpu.py'),
                     'decq_analysis_benchmark_gpu')


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc_summary(__doc__))
    p.add_argument('--out-dir', default=os.environ.get('OUT') or '.')
    p.add_argument('--parts', default=','.join(PARTS))
    p.add_argument('--dit-variants', default=DIT_VARIANTS)
    p.add_argument('--batch2', type=int, default=256)
    p.add_argument('--batch1', type=int, default=64)
    p.add_argument('--stage1-regions',
                   default='perceptual_loss.lpips,discriminator.heads',
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


# -- kernel classes -----------------------------------------------------------
#: (class, substrings of a kernel name), first match wins.
KERNEL_CLASSES = (
    ('communication', ('nccl', 'allreduce')),
    ('attention', ('flash', 'fmha', 'attention', 'attn', 'sdpa', 'mha')),
    ('optimizer', ('adam', 'multi_tensor', 'foreach')),
    ('conv', ('conv', 'implicit', 'winograd', 'dgrad', 'wgrad', 'cudnn')),
    ('gemm', ('gemm', 'nvjet', 'xmma', 'cutlass', 'cublas', 'matmul',
              'addmm', 'mm_', 'sm90_', 'sm80_')),
    ('fused reduction (triton)', ('triton_red', 'triton_per')),
    ('fused pointwise (triton)', ('triton_poi', 'triton_')),
    ('norm (eager)', ('norm',)),
    ('copy / cast', ('copy', 'cast', 'cat', 'transpose', 'permute')),
    ('eager elementwise / reduce', ('elementwise', 'reduce', 'vectorized',
                                    'unrolled')),
)


def kernel_class(name: str) -> str:
    low = name.lower()
    for cls, keys in KERNEL_CLASSES:
        if any(k in low for k in keys):
            return cls
    return 'other'


def kernel_table(prof, steps: int, top: int = 25) -> dict:
    """Per-step device time by kernel class and the heaviest kernels, from a
    ``torch.profiler`` run of ``steps`` steps (CPU ops in a dry run)."""
    kind = torch.autograd.DeviceType.CUDA
    cuda = any(getattr(e, 'device_type', None) == kind for e in prof.events())
    by_class: Dict[str, float] = defaultdict(float)
    kernels = []
    for evt in prof.key_averages():
        if cuda:
            if evt.device_type != kind:
                continue
            us = getattr(evt, 'self_device_time_total', None)
            if us is None:
                us = evt.self_cuda_time_total
        else:
            if evt.key.startswith('ProfilerStep'):
                continue
            us = evt.self_cpu_time_total
        if us <= 0:
            continue
        ms = us / 1e3 / steps
        by_class[kernel_class(evt.key)] += ms
        kernels.append((ms, evt.count // steps, evt.key[:110]))
    total = sum(by_class.values()) or 1.0
    kernels.sort(reverse=True)
    return dict(
        device='cuda' if cuda else 'cpu', total_ms=round(total, 2),
        classes={k: dict(ms=round(v, 2), share=round(v / total, 3))
                 for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])},
        top=[dict(ms=round(ms, 3), calls=n, name=name)
             for ms, n, name in kernels[:top]])


def profile_steps(step: Callable[[], None], steps: int) -> dict:
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        acts.append(ProfilerActivity.CUDA)
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        bench.sync('cuda' if torch.cuda.is_available() else 'cpu')
    return kernel_table(prof, steps)


# -- attention ----------------------------------------------------------------
def bench_attention(dry: bool, batch2: int, batch1: int) -> List[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa
    dev = 'cpu' if dry else 'cuda'
    dtype = torch.float32 if dry else torch.bfloat16
    shapes = [('DiT body, RAE', batch2, 16, 256, 72),
              ('DiT body, DecQ', batch2, 16, 264, 72),
              ('DiT head', batch2, 16, 256, 128),
              ('CFG forward body (2 x batch)', 2 * batch2, 16, 264, 72),
              ('ViT-XL decoder', batch1, 16, 257, 72),
              ('DINO ViT-S/8 disc (2 x batch)', 2 * batch1, 6, 785, 64)]
    if dry:
        shapes = [(s[0], 2, 2, 16, 8) for s in shapes[:2]]
    backends = dict(flash=SDPBackend.FLASH_ATTENTION,
                    efficient=SDPBackend.EFFICIENT_ATTENTION,
                    cudnn=SDPBackend.CUDNN_ATTENTION)
    if dry:
        backends = dict(math=SDPBackend.MATH)
    rows = []
    for name, b, h, n, d in shapes:
        q, k, v = (torch.randn(b, h, n, d, device=dev, dtype=dtype,
                               requires_grad=True) for _ in range(3))
        grad = torch.randn(b, h, n, d, device=dev, dtype=dtype)
        flop = 4 * b * h * n * n * d
        row = dict(shape=name, b=b, h=h, n=n, d=d)
        for key, backend in backends.items():
            try:
                with sdpa_kernel([backend]):
                    fwd = bench.timed(lambda: sdpa(q, k, v), dev,
                                      5 if not dry else 1)
                    both = bench.timed(
                        lambda: torch.autograd.backward(sdpa(q, k, v), grad),
                        dev, 5 if not dry else 1)
                row[key] = dict(fwd_ms=round(fwd * 1e3, 3),
                                fwd_bwd_ms=round(both * 1e3, 3),
                                fwd_tflops=round(flop / fwd / 1e12, 1),
                                fwd_bwd_tflops=round(3.5 * flop / both / 1e12,
                                                     1))
            except RuntimeError as err:
                row[key] = dict(error=str(err).split('\n')[0][:160])
        rows.append(row)
        print('attention', json.dumps(row), flush=True)
    return rows


# -- DiT-DH step variants -----------------------------------------------------
def parse_variant(spec: str) -> dict:
    mode, _, opts = spec.partition(':')
    if mode not in ('rae', 'decq'):
        raise ValueError(f'variant {spec!r}: mode must be rae or decq')
    out = dict(name=spec, queries=8 if mode == 'decq' else 0, sdpa=None,
               budget=None, ckpt=0, whole=False, bshd=False, options={},
               mode=None)
    for opt in filter(None, (opts or 'default').split('+')):
        if opt == 'default':
            continue
        if opt in ('cudnn', 'flash', 'efficient'):
            out['sdpa'] = opt
        elif opt.startswith('budget='):
            out['budget'] = float(opt.split('=', 1)[1])
        elif opt.startswith('ckpt='):
            out['ckpt'] = int(opt.split('=', 1)[1])
        elif opt == 'whole':
            out['whole'] = True
        elif opt == 'bshd':
            out['bshd'] = True
        elif opt == 'cdt':
            out['options']['coordinate_descent_tuning'] = True
        elif opt == 'autotune':
            out['mode'] = 'max-autotune-no-cudagraphs'
        else:
            raise ValueError(f'variant {spec!r}: unknown option {opt!r}')
    return out


def sdpa_priority(name: Optional[str]):
    """A context that puts one SDPA backend first (None: no change)."""
    if name is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    order = dict(cudnn=SDPBackend.CUDNN_ATTENTION,
                 flash=SDPBackend.FLASH_ATTENTION,
                 efficient=SDPBackend.EFFICIENT_ATTENTION)
    first = order.pop(name)
    return sdpa_kernel([first, *order.values(), SDPBackend.MATH],
                       set_priority=True)


def variant_compile(var: dict, dry: bool) -> Callable:
    """The function that compiles a model as variant ``var`` says."""
    from decq_plugin.models.compile_regions import (compile_module,
                                                    compile_regions)
    kwargs = dict(backend='eager') if dry else {}
    if not dry:
        if var['options']:
            kwargs['options'] = var['options']
        if var['mode']:
            kwargs['mode'] = var['mode']
    if var['budget'] is not None:
        kwargs['memory_budget'] = var['budget']

    def apply(model):
        if var['whole']:
            return compile_module(model, dynamic=False, **kwargs)
        compile_regions(model, kwargs or True, ['body_blocks', 'head_blocks'])
        return model
    return apply


def run_dit_variant(var: dict, plan, iters: int, with_profile: bool) -> dict:
    """One variant through ``benchmark_gpu.time_dit`` (the same step), with
    the kernel table of the step and of the CFG forward when asked."""
    from decq_plugin.models.diffusion.layers import Attention
    torch._dynamo.reset()
    torch.manual_seed(0)
    Attention.token_major = var['bshd']
    try:
        with sdpa_priority(var['sdpa']):
            model, ch, grid = bench._dit(plan, 'XL', var['queries'],
                                         grad_checkpoint=var['ckpt'])
            out = bench.time_dit(
                plan, model, ch, grid, var['queries'], plan.batch2,
                variant_compile(var, plan.dry), ceiling=None,
                cfg_forward=with_profile, iters=iters,
                profile=(lambda fn: profile_steps(fn, 2))
                if with_profile else None)
            del model
    finally:
        Attention.token_major = False
    return dict(variant=var['name'], **out)


def bench_dit(plan, variants: List[str], iters: int) -> List[dict]:
    rows, seen = [], set()
    for spec in variants:
        var = parse_variant(spec)
        first = var['queries'] not in seen
        seen.add(var['queries'])
        try:
            row = run_dit_variant(var, plan, iters, with_profile=first)
        except Exception as err:  # keep the other variants' numbers
            row = dict(variant=spec,
                       error=f'{type(err).__name__}: {err}'[:500])
            if plan.device == 'cuda':
                torch.cuda.empty_cache()
        rows.append(row)
        print('dit', json.dumps({k: v for k, v in row.items()
                                 if 'kernels' not in k}), flush=True)
    return rows


# -- stage 1 ------------------------------------------------------------------
class PhaseTimer:
    """Exclusive seconds per named phase; a device sync at each edge."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.totals: Dict[str, float] = defaultdict(float)
        self.counts: Dict[str, int] = defaultdict(int)
        self.stack: List[list] = []
        self.enabled = True

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed_call(*args, **kwargs):
            if not self.enabled:
                return fn(*args, **kwargs)
            bench.sync(self.device)
            now = time.perf_counter()
            if self.stack:  # pause the parent
                self.stack[-1][1] += now - self.stack[-1][2]
            self.stack.append([name, 0.0, now])
            try:
                return fn(*args, **kwargs)
            finally:
                bench.sync(self.device)
                end = time.perf_counter()
                label, spent, start = self.stack.pop()
                self.totals[label] += spent + end - start
                self.counts[label] += 1
                if self.stack:
                    self.stack[-1][2] = end
        return timed_call

    def patch(self, obj, attr: str, name: str) -> None:
        setattr(obj, attr, self.wrap(name, getattr(obj, attr)))

    def table(self, steps: int) -> dict:
        return {k: dict(ms=round(v * 1e3 / steps, 2),
                        calls=self.counts[k] // steps)
                for k, v in sorted(self.totals.items(), key=lambda kv: -kv[1])}


def build_stage1(plan, work: str):
    """Model, optim wrapper and one batch of the stage-1 config, the way
    ``tools/train.py CONFIG --compile`` builds them (every loss on)."""
    from decq_plugin.utils.launch import build_runner, load_config
    train_tool = _load_script(osp.join(ROOT, 'tools', 'train.py'),
                              'decq_tool_train')
    images = osp.join(work, 'jpegs')
    size, crop, resize = ((80, 60), 64, 72) if plan.dry else \
        ((500, 375), 256, 384)
    bench.write_jpegs(images, 2 * plan.batch1, size)
    body = (
        f'train_dataloader = dict(batch_size={plan.batch1}, num_workers=2, '
        f"persistent_workers=False, dataset=dict(_delete_=True, "
        f"type='ImageNetDataset', data_root={images!r}, split='train', "
        f"transform=dict(type='RAETrainCrop', resize={resize}, "
        f'crop={crop})))\n'
        'model = dict(disc_start=0, gan_start=0, tokenizer=dict('
        'encoder=dict(pretrained=False)), discriminator=dict('
        'pretrained=False), perceptual_loss=dict(pretrained_trunk=False)'
        + (f', compile={plan.compile!r}' if plan.dry else '') + ')\n'
        'val_dataloader = None\nval_cfg = None\nval_evaluator = None\n')
    cfg_path = bench._override_config(osp.join(work, 'stage1.py'),
                                      plan.stage1, body)
    args = train_tool.parse_args([cfg_path, '--work-dir',
                                  osp.join(work, 'wd1'), '--compile'])
    cfg = train_tool.merge_args(load_config(cfg_path), args)
    from decq_plugin.utils import register_all_modules
    from decq_plugin.utils.launch import set_matmul_precision
    register_all_modules(init_default_scope=False)
    set_matmul_precision(cfg.get('precision', 'fp32'))
    runner = build_runner(cfg)
    loader = runner.build_dataloader(cfg.train_dataloader)
    batch = next(iter(loader))
    wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
    wrapper.initialize_count_status(runner.model, 0, 1000)
    return runner, wrapper, batch


def bench_stage1(plan, work: str, iters: int,
                 regions: List[str]) -> dict:
    runner, wrapper, batch = build_stage1(plan, work)
    model = runner.model
    dev = plan.device
    step = lambda: model.train_step(batch, wrapper)  # noqa: E731
    out = dict(batch=plan.batch1, config=plan.stage1,
               compiled=list(getattr(model, 'compiled_regions', [])))
    t0 = time.time()
    for _ in range(2):
        log = step()
    out['first_steps_s'] = round(time.time() - t0, 1)
    out['log_keys'] = sorted(log)
    if dev == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    seconds = bench.timed(step, dev, iters)
    out.update(img_s=round(plan.batch1 / seconds, 1),
               step_ms=round(seconds * 1e3, 1), peak_gib=bench.peak_gib(dev))
    # Phases: exclusive times with a sync at each edge.
    timer = PhaseTimer(dev)
    tok = model.tokenizer
    for obj, attr, name in (
            (model.data_preprocessor, 'forward', 'preprocess'),
            (tok, 'encode_raw', 'encode (VFM + condensers)'),
            (tok, 'decode_raw', 'decode (fwd)'),
            (model.perceptual_loss, 'forward', 'LPIPS (fwd)'),
            (model.discriminator, 'forward', 'discriminator (fwd)'),
            (model.diffaug, 'forward', 'DiffAug')):
        if obj is not None:
            timer.patch(obj, attr, name)
    for key in wrapper.keys():
        w = wrapper[key]
        timer.patch(w, 'backward', f'{key}: backward')
        timer.patch(w, 'step', f'{key}: optimizer step (+clip)')
    timer.patch(model, 'train_step', 'train_step (rest)')
    original_grad = torch.autograd.grad
    torch.autograd.grad = timer.wrap('autograd.grad (LPIPS/disc bwd)',
                                     original_grad)
    try:
        phases_steps = max(2, iters // 2)
        for _ in range(phases_steps):
            model.train_step(batch, wrapper)
        out['phases'] = timer.table(phases_steps)
        out['phases_total_ms'] = round(
            sum(v['ms'] for v in out['phases'].values()), 1)
    finally:
        timer.enabled = False
        torch.autograd.grad = original_grad
    out['kernels'] = profile_steps(step, 2)
    # More compiled regions, one after the other (cumulative).
    from decq_plugin.models.compile_regions import compile_regions
    spec = dict(backend='eager') if plan.dry else True
    out['more_regions'] = []
    for region in filter(None, regions):
        row = dict(added=region)
        try:
            row['compiled'] = compile_regions(model, spec, [region])
            step()
            row['img_s'] = round(plan.batch1 / bench.timed(step, dev, iters),
                                 1)
            row['peak_gib'] = bench.peak_gib(dev)
        except Exception as err:
            row['error'] = f'{type(err).__name__}: {err}'[:500]
        out['more_regions'].append(row)
        print('stage1', json.dumps(row), flush=True)
        if 'error' in row:
            break
    return out


# -- report -------------------------------------------------------------------
def to_markdown(results: dict) -> str:
    env = results['env']
    lines = [f"# GPU profile: {env['gpu']}, torch {env['torch']}, "
             f"{env['date']}", '', f"Command: `{env['command']}`", '']
    att = results.get('attention')
    if isinstance(att, list) and att:
        keys = [k for k in att[0] if k not in ('shape', 'b', 'h', 'n', 'd')]
        lines += ['## SDPA fwd+bwd ms (TFLOP/s)', '',
                  '| shape | B, H, N, d | ' + ' | '.join(keys) + ' |',
                  '|---|---|' + '---|' * len(keys)]
        for r in att:
            cells = []
            for k in keys:
                c = r[k]
                cells.append(f"{c['fwd_bwd_ms']} ({c['fwd_bwd_tflops']})"
                             if 'fwd_bwd_ms' in c else 'n/a')
            lines.append(f"| {r['shape']} | {r['b']}, {r['h']}, {r['n']}, "
                         f"{r['d']} | " + ' | '.join(cells) + ' |')
        lines.append('')
    dit = results.get('dit')
    if isinstance(dit, list):
        lines += ['## DiT-DH-XL hand-written step variants', '',
                  '| variant | batch | img/s | step ms | peak GiB | '
                  'CFG img/s |',
                  '|---|---|---|---|---|---|']
        for r in dit:
            if 'img_s' not in r:
                lines.append(f"| {r['variant']} | | {r.get('error')} | | | |")
                continue
            lines.append(f"| {r['variant']} | {r['batch']} | {r['img_s']} | "
                         f"{r['step_ms']} | {r['peak_gib']} | "
                         f"{r.get('cfg_forward_img_s_per_nfe', '')} |")
        lines.append('')
        for r in dit:
            for key in ('kernels', 'cfg_kernels'):
                if key in r:
                    lines += _kernel_lines(f"{r['variant']} {key}", r[key])
    s1 = results.get('stage1')
    if isinstance(s1, dict) and 'phases' in s1:
        lines += [f"## Stage-1 train_step, batch {s1['batch']}: "
                  f"{s1['img_s']} img/s ({s1['step_ms']} ms, "
                  f"{s1['peak_gib']} GiB)", '',
                  f"Phases (synced; total {s1['phases_total_ms']} ms):", '',
                  '| phase | ms / step | calls |', '|---|---|---|']
        for k, v in s1['phases'].items():
            lines.append(f"| {k} | {v['ms']} | {v['calls']} |")
        lines.append('')
        lines += _kernel_lines('stage-1 kernels', s1['kernels'])
        lines += ['| compiled in addition (cumulative) | img/s | peak GiB |',
                  '|---|---|---|']
        for r in s1.get('more_regions', []):
            lines.append(f"| {r['added']} | {r.get('img_s', r.get('error'))}"
                         f" | {r.get('peak_gib', '')} |")
        lines.append('')
    return '\n'.join(lines) + '\n'


def _kernel_lines(title: str, table: dict) -> List[str]:
    lines = [f"### {title}: {table['total_ms']} ms of {table['device']} "
             'time per step', '', '| class | ms | share |', '|---|---|---|']
    for k, v in table['classes'].items():
        lines.append(f"| {k} | {v['ms']} | {v['share']:.1%} |")
    lines += ['', '| kernel | ms | calls |', '|---|---|---|']
    for t in table['top'][:15]:
        lines.append(f"| `{t['name']}` | {t['ms']} | {t['calls']} |")
    return lines + ['']


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    plan = bench.Plan(argparse.Namespace(
        dry_run=args.dry_run, quick=True, batch2=args.batch2,
        batch1=args.batch1, num_samples=None))
    iters = 2 if args.dry_run else args.iters
    os.makedirs(args.out_dir, exist_ok=True)
    env = bench.env_info(argv)
    env['command'] = env['command'].replace('benchmark_gpu', 'profile_gpu')
    results = dict(env=env)
    if plan.device == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
    bench.init_scope()
    work = tempfile.mkdtemp(prefix='decq_profile_')

    def save():
        with open(osp.join(args.out_dir, 'profile_gpu.json'), 'w') as f:
            json.dump(results, f, indent=1)
        with open(osp.join(args.out_dir, 'profile_gpu.md'), 'w') as f:
            f.write(to_markdown(results))

    parts = args.parts.split(',')
    jobs = [('attention', lambda: bench_attention(plan.dry, plan.batch2,
                                                  plan.batch1)),
            ('stage1', lambda: bench_stage1(
                plan, work, iters, args.stage1_regions.split(','))),
            ('dit', lambda: bench_dit(plan, args.dit_variants.split(','),
                                      iters))]
    for name, fn in jobs:
        if name not in parts:
            continue
        t0 = time.time()
        try:
            results[name] = fn()
        except Exception as err:  # keep the other parts
            import traceback
            traceback.print_exc()
            results[name] = dict(error=f'{type(err).__name__}: {err}'[:800])
        results[f'{name}_wall_s'] = round(time.time() - t0, 1)
        save()
    save()
    print(to_markdown(results))
    return results


if __name__ == '__main__':
    main()
