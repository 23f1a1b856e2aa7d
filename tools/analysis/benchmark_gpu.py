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
"""
import argparse
import datetime
import json
import os
import os.path as osp
import re
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import torch
from decq_plugin.utils.cli import doc_summary  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

STAGE2 = 'configs/ldm/ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_8xb128-80e_in1k-256.py'  # noqa: E501
STAGE1 = 'configs/decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py'  # noqa: E501
SAMPLE = 'configs/ldm/ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_cfg_8xb128-800e_in1k-256.py'  # noqa: E501
DEMO2 = 'configs/demo/ldm_dit-dh-tiny_decq-tiny_1xb16-40e_demo-64.py'
DEMO1 = 'configs/demo/decq_tiny_1xb8-16e_demo-64.py'
TINY_DIT = dict(body_width=32, body_depth=2, body_heads=2, head_width=48,
                head_depth=1, head_heads=2)
PARTS = ('matmul', 'train1', 'headline', 'step', 'train2', 'sample')
HEADLINE_ROWS = ('rae', 'decq', 'token-major', 'rae-code')


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
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    p.add_argument('--worker-args', default='{}', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.parts.split(',')) - set(PARTS)
    if unknown:
        p.error(f'--parts: unknown {sorted(unknown)}; choose from {PARTS}')
    return args


class Plan:
    """Sizes of one run: full, ``--quick`` or ``--dry-run``."""

    def __init__(self, args: argparse.Namespace) -> None:
        dry, quick = args.dry_run, args.quick
        self.dry = dry
        self.device = 'cpu' if dry or not torch.cuda.is_available() \
            else 'cuda'
        self.batch2 = 4 if dry else args.batch2
        self.batch1 = 4 if dry else args.batch1
        self.step_batch = 4 if dry else args.step_batch
        self.iters2 = 2 if dry else (20 if quick else 30)
        self.iters1 = 2 if dry else (20 if quick else 30)
        self.log_interval = 1 if dry else 5
        self.step_iters = 2 if dry else (5 if quick else 10)
        self.num_samples = args.num_samples or (
            2 if dry else (128 if quick else 256))
        self.sample_batch = 2 if dry else 128
        self.stage2 = DEMO2 if dry else STAGE2
        self.stage1 = DEMO1 if dry else STAGE1
        self.sample_cfg = DEMO2 if dry else SAMPLE
        self.matmul_n = 64 if dry else 8192
        # CPU checks compile with dynamo's eager backend (no C++ build).
        self.compile = dict(backend='eager') if dry else True


# -- small helpers ------------------------------------------------------------
def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def timed(fn, device: str, iters: int, warmup: int = 2) -> float:
    """Median seconds of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def peak_gib(device: str) -> Optional[float]:
    if device != 'cuda':
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 1)


def env_info(argv: List[str]) -> dict:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() \
        else 'cpu'
    return dict(command=' '.join(shlex.quote(a) for a in
                                 ['python', 'tools/analysis/benchmark_gpu.py',
                                  *argv]),
                date=datetime.datetime.now().isoformat(timespec='seconds'),
                torch=torch.__version__, gpu=gpu,
                cuda=torch.version.cuda)


def init_scope() -> None:
    from decq_plugin.utils import register_all_modules
    register_all_modules(init_default_scope=True)


# -- parts --------------------------------------------------------------------
def bench_matmul(plan: Plan) -> dict:
    n = plan.matmul_n
    a = torch.randn(n, n, device=plan.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=plan.device, dtype=torch.bfloat16)
    seconds = timed(lambda: a @ b, plan.device, 10 if not plan.dry else 2)
    return dict(n=n, tflops=round(2 * n**3 / seconds / 1e12, 1))


def _dit(plan: Plan, arch, num_queries: int = 8, **kwargs):
    """DiT-DH (tiny in a dry run) for the full-size latents, built on the
    plan's device; ``kwargs`` go to ``DiTDH``."""
    from decq_plugin.models.diffusion.dit_dh import DiTDH
    ch, grid = (8, 4) if plan.dry else (768, 16)
    with torch.device(plan.device):  # initialise on the GPU: no CPU pass
        model = DiTDH(arch=TINY_DIT if plan.dry else arch, in_channels=ch,
                      grid_size=grid, num_queries=num_queries, **kwargs)
    return model, ch, grid


class PatchOnlyVelocity(torch.nn.Module):
    """The public RAE code's ``DiTwDDTHead`` behind this project's velocity
    interface (``{'patch': x}, t, y -> {'patch': v}``)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: dict, t, y) -> dict:
        return {'patch': self.net(x['patch'], t, y)}


def rae_code_dit(plan: Plan, rae_src: str):
    """DiT-DH-XL of the public RAE code (``src/`` of its repository at
    ``rae_src``), built as its ImageNet-256 DINOv2-B config builds it."""
    if rae_src not in sys.path:
        sys.path.insert(0, rae_src)
    from stage2.models.DDT import DiTwDDTHead
    size = dict(hidden_size=[64, 96], depth=[2, 1], num_heads=[2, 2]) \
        if plan.dry else dict(hidden_size=[1152, 2048], depth=[28, 2],
                              num_heads=[16, 16])
    ch, grid = (8, 4) if plan.dry else (768, 16)
    # Built on the CPU: the code makes some of its tables there.
    net = DiTwDDTHead(input_size=grid, patch_size=1, in_channels=ch,
                          mlp_ratio=4.0, class_dropout_prob=0.1,
                          num_classes=1000, use_qknorm=False, use_swiglu=True,
                          use_rope=True, use_rmsnorm=True, wo_shift=False,
                          use_pos_embed=True, **size)
    return PatchOnlyVelocity(net).to(plan.device), ch, grid


def _latents(batch: int, ch: int, grid: int, q: int, device: str) -> dict:
    x = {'patch': torch.randn(batch, ch, grid, grid, device=device)}
    if q:
        x['query'] = torch.randn(batch, q, ch, device=device)
    return x


def flops_per_image(model, x: dict, y, loss_fn) -> float:
    """Counted FLOPs of one fwd+bwd, per image (eager, the given batch)."""
    from decq_plugin.utils.flops import count_flops

    def run():
        loss_fn(model, x, y)['loss'].backward()

    total = count_flops(run)
    model.zero_grad(set_to_none=True)
    return total / x['patch'].shape[0]


def time_dit(plan: Plan, model, ch: int, grid: int, queries: int,
             batch: int, compile_fn, ceiling: Optional[float],
             cfg_forward: bool = True, iters: Optional[int] = None,
             profile=None) -> dict:
    """The hand-written train step (flow-matching loss, fused AdamW, grad
    clip 1.0, bf16 autocast) of ``model`` at ``batch``: img/s, peak memory,
    counted FLOP/img, MFU and (optionally) the CFG forward (2 x batch).

    ``profile``: a function of a step function returning a dict (e.g. a
    profiler table), applied to the train step (``kernels``) and the CFG
    forward (``cfg_kernels``)."""
    from decq_plugin.models.compile_regions import recompile_counts
    from decq_plugin.models.losses.flow_matching import FlowMatchingLoss
    model.train()
    loss_fn = FlowMatchingLoss()
    dev = plan.device
    amp = dict(device_type=dev, dtype=torch.bfloat16, enabled=dev == 'cuda')
    x = _latents(batch, ch, grid, queries, dev)
    y = torch.randint(0, 1000, (batch, ), device=dev)
    out = dict(batch=batch)
    with torch.autocast(**amp):
        out['gflop_per_img'] = round(
            flops_per_image(model, _latents(2, ch, grid, queries, dev),
                            y[:2], loss_fn) / 1e9, 1)
    fwd = compile_fn(model)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.95),
                            fused=dev == 'cuda')

    def step():
        with torch.autocast(**amp):
            loss = loss_fn(fwd, x, y)['loss']
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    iters = iters or plan.step_iters
    if dev == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    step()
    out['first_step_s'] = round(time.time() - t0, 1)  # compilation
    seconds = timed(step, dev, iters)
    out.update(img_s=round(batch / seconds, 1),
               step_ms=round(seconds * 1e3, 1), peak_gib=peak_gib(dev),
               compiled=recompile_counts())
    if profile is not None:
        out['kernels'] = profile(step)
    if ceiling:
        out['mfu'] = round(out['img_s'] * out['gflop_per_img'] * 1e9 /
                           (ceiling * 1e12), 3)
    del opt
    if cfg_forward:
        model.eval()
        x2 = _latents(2 * batch, ch, grid, queries, dev)
        y2 = torch.randint(0, 1000, (2 * batch, ), device=dev)
        t2 = torch.rand(2 * batch, device=dev)

        @torch.no_grad()
        def cfg():
            with torch.autocast(**amp):
                fwd(x2, t2, y2)

        out['cfg_forward_img_s_per_nfe'] = round(
            batch / timed(cfg, dev, iters), 1)
        if profile is not None:
            out['cfg_kernels'] = profile(cfg)
    if dev == 'cuda':
        torch.cuda.empty_cache()
    return out


def _regional(plan: Plan):
    from decq_plugin.models.compile_regions import compile_regions

    def apply(model):
        compile_regions(model, plan.compile, ['body_blocks', 'head_blocks'])
        return model
    return apply


def bench_step(plan: Plan, ceiling: Optional[float]) -> dict:
    """The hand-written DiT-DH-XL DecQ step at ``tools/train.py``'s batch,
    compiled like ``model.compile=True``."""
    torch.manual_seed(0)
    model, ch, grid = _dit(plan, 'XL')
    out = time_dit(plan, model, ch, grid, 8, plan.batch2, _regional(plan),
                   ceiling)
    del model
    return out


def bench_headline(plan: Plan, ceiling: Optional[float],
                   rae_src: Optional[str],
                   rows_wanted: Sequence[str] = HEADLINE_ROWS) -> List[dict]:
    """The DiT-DH-XL step at ``--step-batch`` (the issue's batch 256):
    RAE mode, RAE mode with token-major attention inputs, DecQ mode, and
    the public RAE code's model (compiled whole, as its trainer does),
    one after the other in one process."""
    from decq_plugin.models.diffusion.layers import Attention
    rows = []
    runs = [('rae', 'DiTDH, RAE mode', 0, False),
            ('decq', 'DiTDH, DecQ mode', 8, False),
            ('token-major', 'DiTDH, RAE mode, token-major q/k/v', 0, True)]
    for key, name, queries, token_major in runs:
        if key not in rows_wanted:
            continue
        torch._dynamo.reset()
        torch.manual_seed(0)
        Attention.token_major = token_major
        try:
            model, ch, grid = _dit(plan, 'XL', queries)
            row = time_dit(plan, model, ch, grid, queries, plan.step_batch,
                           _regional(plan), ceiling)
            del model
        except Exception as err:  # keep the other rows
            row = dict(error=f'{type(err).__name__}: {err}'[:500])
        finally:
            Attention.token_major = False
        rows.append(dict(what=name, **row))
        print('headline', json.dumps(rows[-1]), flush=True)
    if rae_src and 'rae-code' in rows_wanted:
        torch._dynamo.reset()
        torch.manual_seed(0)
        compile_kw = dict(backend='eager') if plan.dry else {}
        try:
            model, ch, grid = rae_code_dit(plan, rae_src)
            row = time_dit(plan, model, ch, grid, 0, plan.step_batch,
                           lambda m: torch.compile(m, **compile_kw), ceiling)
            del model
        except Exception as err:
            row = dict(error=f'{type(err).__name__}: {err}'[:500])
        rows.append(dict(what='public RAE code DiTwDDTHead, torch.compile',
                         **row))
        print('headline', json.dumps(rows[-1]), flush=True)
    if plan.device == 'cuda':
        torch.cuda.empty_cache()
    return rows


# -- tools/train.py runs ------------------------------------------------------
def write_latent_shards(root: str, shapes: Dict[str, tuple], count: int,
                        num_classes: int) -> None:
    from decq_plugin.datasets.latent_dataset import LatentShardWriter
    if osp.isfile(osp.join(root, 'meta.json')):
        return
    with LatentShardWriter(root, shard_size=1024, tokenizer='synthetic',
                           normalised=True) as writer:
        for start in range(0, count, 256):
            n = min(256, count - start)
            writer.add({k: torch.randn(n, *s, dtype=torch.float16)
                        for k, s in shapes.items()},
                       torch.randint(0, num_classes, (n, )))


def _jpeg(args: tuple) -> None:
    import numpy as np
    from PIL import Image
    path, seed, size = args
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(base).resize(size, Image.BICUBIC).save(path, quality=90)


def write_jpegs(root: str, count: int, size: tuple) -> None:
    """``count`` JPEGs in ``root/train/n0000000k/`` (10 classes)."""
    from multiprocessing import Pool
    jobs = []
    for i in range(count):
        folder = osp.join(root, 'train', f'n{i % 10:08d}')
        os.makedirs(folder, exist_ok=True)
        path = osp.join(folder, f'img_{i:06d}.JPEG')
        if not osp.isfile(path):
            jobs.append((path, i, size))
    if len(jobs) < 256:
        for job in jobs:
            _jpeg(job)
    else:
        with Pool(min(8, os.cpu_count() or 1)) as pool:
            pool.map(_jpeg, jobs, chunksize=32)


def latent_shapes(config: str) -> Dict[str, tuple]:
    """Per-sample latent shapes of a stage-2 config's tokenizer (built on
    the meta device: nothing is allocated)."""
    from decq_plugin.registry import MODELS
    from decq_plugin.utils.launch import load_config
    init_scope()
    cfg = load_config(osp.join(ROOT, config))
    with torch.device('meta'):
        tokenizer = MODELS.build(cfg.model.tokenizer)
    return {k: tuple(v) for k, v in tokenizer.latent_shapes.items()}


def parse_train_log(log: str, batch: int, skip_windows: int = 1) -> dict:
    """img/s from ``tools/train.py``'s log: the logger's windowed step
    times, the first window(s) (compilation) skipped, the median kept."""
    times = [float(v) for v in re.findall(r'\btime: ([\d.]+)', log)]
    data = [float(v) for v in re.findall(r'\bdata_time: ([\d.]+)', log)]
    mem = [int(v) for v in re.findall(r'\bmemory: (\d+)', log)]
    losses = re.findall(r'\bloss: ([-\d.naninf]+)', log)
    out = dict(step_times=times, data_times=data,
               memory_mib=mem[-1] if mem else None, last_losses=losses[-3:])
    steady = times[skip_windows:] or times
    if steady:
        median = sorted(steady)[len(steady) // 2]
        out.update(step_s=median, img_s=round(batch / median, 1))
    return out


def _override_config(path: str, base: str, body: str) -> str:
    with open(path, 'w') as f:
        f.write(f'_base_ = [{osp.join(ROOT, base)!r}]\n{body}')
    return path


def run_train_tool(plan: Plan, stage: int, work: str,
                   timeout: int) -> dict:
    """One ``tools/train.py`` run on synthetic data; img/s from its log."""
    if stage == 2:
        shapes = latent_shapes(plan.stage2)
        lat = osp.join(work, 'latents')
        classes = 8 if plan.dry else 1000
        write_latent_shards(lat, shapes, plan.iters2 * plan.batch2, classes)
        batch, config = plan.batch2, plan.stage2
        body = (f'train_dataloader = dict(batch_size={batch}, dataset=dict('
                f'data_root={lat!r}, use_flip=False))\n')
        if plan.dry:
            body += f'model = dict(compile={plan.compile!r})\n'
    else:
        images = osp.join(work, 'jpegs')
        size, crop, resize = ((80, 60), 64, 72) if plan.dry else \
            ((500, 375), 256, 384)
        write_jpegs(images, plan.iters1 * plan.batch1, size)
        batch, config = plan.batch1, plan.stage1
        body = (
            f'train_dataloader = dict(batch_size={batch}, dataset=dict('
            f"_delete_=True, type='ImageNetDataset', data_root={images!r}, "
            f"split='train', transform=dict(type='RAETrainCrop', "
            f'resize={resize}, crop={crop})))\n'
            'model = dict(disc_start=0, gan_start=0, tokenizer=dict('
            'encoder=dict(pretrained=False)), discriminator=dict('
            'pretrained=False), perceptual_loss=dict(pretrained_trunk='
            'False)' + (f', compile={plan.compile!r}' if plan.dry else '')
            + ')\n')
    body += (
        'val_dataloader = None\nval_cfg = None\nval_evaluator = None\n'
        'train_cfg = dict(max_epochs=1, val_interval=1000)\n'
        f'default_hooks = dict(logger=dict(interval={plan.log_interval}), '
        'checkpoint=dict(interval=1000, save_last=False))\n'
        f'log_processor = dict(window_size={plan.log_interval})\n')
    cfg = _override_config(osp.join(work, f'stage{stage}.py'), config, body)
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), cfg,
           '--work-dir', osp.join(work, f'wd{stage}'), '--compile']
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
        log, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        log = (err.stdout or b'').decode() if isinstance(
            err.stdout, bytes) else (err.stdout or '')
        rc = 'timeout'
    out = dict(config=config, batch=batch, rc=rc,
               wall_s=round(time.time() - t0, 1),
               **parse_train_log(log, batch, 0 if plan.dry else 1))
    if rc != 0:
        out['tail'] = log[-3000:]
    return out


# -- tools/sample.py ----------------------------------------------------------
def sample_worker(opts: dict) -> dict:
    """In a fresh process: a random-weight checkpoint of the config, then
    ``tools/sample.py``'s ``main`` twice (compile, then timed)."""
    import importlib.util
    init_scope()
    from decq_plugin.registry import MODELS
    from decq_plugin.utils.launch import load_config
    work, config = opts['work'], osp.join(ROOT, opts['config'])
    cfg = load_config(config)
    if opts.get('compile_cfg'):
        override = _override_config(
            osp.join(work, 'sample_cfg.py'), opts['config'],
            f"model = dict(compile={opts['compile_cfg']!r})\n")
        config = override
    ckpt = osp.join(work, 'random.pth')
    torch.manual_seed(0)
    with torch.device('cuda' if torch.cuda.is_available() and
                      '--device' not in opts['extra'] else 'cpu'):
        model = MODELS.build(cfg.model)  # random weights, fast init on GPU
    state = {k: v.to('cpu', torch.bfloat16) if v.is_floating_point()
             else v.cpu() for k, v in model.state_dict().items()}
    torch.save({'state_dict': state}, ckpt)
    del model, state
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    spec = importlib.util.spec_from_file_location(
        'decq_sample_tool', osp.join(ROOT, 'tools', 'sample.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    common = [config, ckpt, '--batch-size', str(opts['batch']), '--no-npz',
              '--classes', '0', *opts['extra']]
    warm = tool.main(common + ['--out-dir', osp.join(work, 's_warm'),
                               '--num-per-class', str(opts['batch'])])
    run = tool.main(common + ['--out-dir', osp.join(work, 's_timed'),
                              '--num-per-class', str(opts['num'])])
    return dict(images=run['num_samples'], seconds=round(run['seconds'], 2),
                img_s=round(run['num_samples'] / run['seconds'], 2),
                warmup_seconds=round(warm['seconds'], 1),
                precision=run['precision'], config=opts['config'],
                peak_gib=peak_gib('cuda' if torch.cuda.is_available()
                                  else 'cpu'))


def run_sample_tool(plan: Plan, work: str, timeout: int) -> dict:
    extra = ['--compile'] if not plan.dry else []
    if plan.dry:
        extra += ['--guidance-scale', '1.5', '--guidance-interval', '0.0',
                  '0.7', '--device', 'cpu', '--num-steps', '2']
    opts = dict(work=work, config=plan.sample_cfg, batch=plan.sample_batch,
                num=plan.num_samples, extra=extra,
                compile_cfg=plan.compile if plan.dry else None)
    cmd = [sys.executable, osp.abspath(__file__), '--worker', 'sample',
           '--worker-args', json.dumps(opts)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines()
             if ln.startswith('WORKER_RESULT ')]
    if proc.returncode or not lines:
        return dict(rc=proc.returncode,
                    tail=(proc.stdout + proc.stderr)[-3000:])
    return json.loads(lines[-1][len('WORKER_RESULT '):])


def _sibling(name: str):
    """A module of this folder (tools/analysis is no package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        f'decq_analysis_{name}', osp.join(osp.dirname(__file__), f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- report -------------------------------------------------------------------
def to_markdown(results: dict) -> str:
    env = results['env']
    lines = [f"# GPU benchmark: {env['gpu']}, torch {env['torch']}, "
             f"{env['date']}", '', f"Command: `{env['command']}`", '']
    if 'matmul' in results:
        lines += [f"bf16 matmul ceiling: {results['matmul']['tflops']} "
                  'TFLOP/s (MFU denominator)', '']
    lines += ['| what | batch | img/s | peak GiB | MFU | note |',
              '|---|---|---|---|---|---|']

    def row(what, r, note=''):
        if not isinstance(r, dict):
            return
        if 'img_s' not in r:
            lines.append(f"| {what} | | failed (rc {r.get('rc')}) | | | "
                         f'{note} |')
            return
        peak = r.get('peak_gib') or (round(r['memory_mib'] / 1024, 1)
                                     if r.get('memory_mib') else '')
        mfu = f"{r['mfu']:.0%}" if r.get('mfu') is not None else ''
        lines.append(f"| {what} | {r.get('batch', '')} | {r['img_s']} | "
                     f'{peak} | {mfu} | {note} |')

    for r in results.get('headline') or []:
        if isinstance(r, dict):
            row(f"DiT-DH-XL train step, {r['what']}", r,
                f"{r.get('gflop_per_img')} GFLOP/img; CFG forward "
                f"{r.get('cfg_forward_img_s_per_nfe')} img/s per NFE"
                if 'img_s' in r else r.get('error', ''))
    step = results.get('step')
    row('DiT-DH-XL DecQ train step, hand-written, compiled regions', step,
        f"{step.get('gflop_per_img')} GFLOP/img" if step else '')
    if step and 'cfg_forward_img_s_per_nfe' in step:
        lines.append(f"| DiT-DH-XL DecQ CFG forward (2 x batch), per NFE | "
                     f"{step['batch']} | {step['cfg_forward_img_s_per_nfe']}"
                     ' | | | |')
    row('tools/train.py stage 2 XL DecQ, --compile, bf16',
        results.get('train2'), 'img/s from its log')
    row('tools/train.py stage 1 DecQ, every loss on, --compile, bf16',
        results.get('train1'), 'img/s from its log')
    sample = results.get('sample')
    row('tools/sample.py XL DecQ CFG, 50 steps + decode, --compile', sample,
        f"{sample.get('precision')}" if sample else '')
    return '\n'.join(lines) + '\n'


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker == 'sample':
        result = sample_worker(json.loads(args.worker_args))
        print('WORKER_RESULT ' + json.dumps(result), flush=True)
        return result
    if args.stability:
        return _sibling('bf16_stability').run_stability(args, env_info(argv))
    plan = Plan(args)
    parts = args.parts.split(',')
    os.makedirs(args.out_dir, exist_ok=True)
    results = dict(env=env_info(argv), plan=vars(plan))
    if plan.device == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
    work = tempfile.mkdtemp(prefix='decq_bench_')
    init_scope()

    def save():
        with open(osp.join(args.out_dir, 'benchmark_gpu.json'), 'w') as f:
            json.dump(results, f, indent=1)
        with open(osp.join(args.out_dir, 'benchmark_gpu.md'), 'w') as f:
            f.write(to_markdown(results))

    def matmul_ceiling() -> Optional[float]:
        return results.get('matmul', {}).get('tflops')

    steps = [('matmul', lambda: bench_matmul(plan)),
             ('train1', lambda: run_train_tool(plan, 1, work, args.timeout)),
             ('headline', lambda: bench_headline(
                 plan, matmul_ceiling(), args.rae_src,
                 args.headline_rows.split(','))),
             ('step', lambda: bench_step(plan, matmul_ceiling())),
             ('train2', lambda: run_train_tool(plan, 2, work, args.timeout)),
             ('sample', lambda: run_sample_tool(plan, work, args.timeout))]
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
    print(to_markdown(results))
    return results


if __name__ == '__main__':
    main()
