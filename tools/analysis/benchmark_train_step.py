"""GPU throughput of the pipeline's heavy parts, RAE vs DecQ in one run.

    python tools/analysis/benchmark_train_step.py --out-dir results/ \
        [--parts encoder,decoder,dit] [--dit-arch XL] [--compile]

Parts (random weights, full size unless --tiny):

* ``encoder``: frozen DINOv2-B/14-reg forward (RAE) vs the same VFM with
  DecQ's condensers (batch 128, no grad);
* ``decoder``: ViT-XL pixel decoder train step (L1 on random targets,
  AdamW; patch-only vs patch+8 queries; batch 128, eager);
* ``dit``: DiT-DH train step (flow-matching loss, AdamW, grad clip 1.0),
  RAE mode (256 tokens) vs DecQ mode (256 + 8 tokens), eager at batch 128
  and, with ``--compile``, ``torch.compile`` at batch 256.

bf16 autocast throughout. Each number is the median over ``--iters``
timed iterations (CUDA events) after ``--warmup`` iterations; peak memory
is ``torch.cuda.max_memory_allocated``. Results go to
``results.json`` and ``results.md`` in ``--out-dir``.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
from typing import Callable, Dict

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

from decq_plugin.registry import MODELS  # noqa: E402
from decq_plugin.utils.cli import doc_summary  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument('--out-dir', default='.')
    parser.add_argument('--parts', default='encoder,decoder,dit')
    parser.add_argument('--dit-arch', default='XL')
    parser.add_argument('--compile', action='store_true')
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--compile-batch-size', type=int, default=256)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--tiny', action='store_true',
                        help='tiny models on the CPU (checks the script)')
    return parser.parse_args(argv)


class Timer:
    """Median seconds per call of ``fn`` and its peak memory."""

    def __init__(self, device: str, iters: int, warmup: int) -> None:
        self.device, self.iters, self.warmup = device, iters, warmup

    def __call__(self, fn: Callable[[], None]) -> Dict[str, float]:
        cuda = self.device == 'cuda'
        for _ in range(self.warmup):
            fn()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(self.iters):
            if cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                import time
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
        return dict(seconds=statistics.median(times), peak_gib=peak)


def tokenizer_cfg(decq: bool, tiny: bool) -> dict:
    enc = dict(type='TimmViTEncoder', pretrained=False)
    dec = dict(type='ViTPixelDecoder', arch='XL', patch_size=16)
    if tiny:
        enc.update(input_size=56,
                   model_kwargs=dict(embed_dim=64, depth=12, num_heads=4))
        dec['arch'] = dict(width=64, depth=2, num_heads=4, mlp_dim=128)
    cfg = dict(type='DecQTokenizer' if decq else 'RAETokenizer', encoder=enc,
               decoder=dec)
    if decq:
        cfg['condenser'] = dict(num_queries=8, layers=(0, 3, 6, 9),
                                num_heads=4 if tiny else 12)
    return cfg


def bench_encoder(args, timer, device, dtype) -> Dict[str, dict]:
    rae = MODELS.build(tokenizer_cfg(False, args.tiny)).to(device).eval()
    decq = MODELS.build(tokenizer_cfg(True, args.tiny)).to(device).eval()
    decq.encoder.load_state_dict(rae.encoder.state_dict())
    b, s = args.batch_size, rae.image_size
    x = torch.rand(b, 3, s, s, device=device)
    out = {}
    for name, tok in (('rae', rae), ('decq', decq)):
        def step(tok=tok):
            with torch.no_grad(), torch.autocast(device, dtype):
                tok.encode_raw(x)
        r = timer(step)
        r['images_per_s'] = b / r['seconds']
        out[name] = r
    return out


def bench_decoder(args, timer, device, dtype) -> Dict[str, dict]:
    out = {}
    for name, decq in (('rae', False), ('decq', True)):
        tok = MODELS.build(tokenizer_cfg(decq, args.tiny))
        dec = tok.decoder.to(device).train()
        opt = torch.optim.AdamW(dec.parameters(), lr=1e-4, fused=device ==
                                'cuda')
        b = args.batch_size
        lat = {k: torch.randn(b, *v, device=device)
               for k, v in tok.latent_shapes.items()}
        target = torch.rand(b, 3, tok.image_size, tok.image_size,
                            device=device)

        def step(dec=dec, lat=lat, opt=opt):
            with torch.autocast(device, dtype):
                loss = (dec(lat['patch'], lat.get('query')) -
                        target).abs().mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        r = timer(step)
        r['images_per_s'] = b / r['seconds']
        out[name] = r
        del dec, opt, tok
        torch.cuda.empty_cache() if device == 'cuda' else None
    return out


def bench_dit(args, timer, device, dtype) -> Dict[str, dict]:
    loss_fn = MODELS.build(dict(type='FlowMatchingLoss'))
    arch = args.dit_arch
    grid, ch = (4, 64) if args.tiny else (16, 768)
    if args.tiny:
        arch = dict(body_width=64, body_depth=2, body_heads=4, head_width=128,
                    head_depth=1, head_heads=4)
    modes = [('eager', False, args.batch_size)]
    if args.compile:
        modes.append(('compiled', True, args.compile_batch_size))
    out = {}
    for name, q in (('rae', 0), ('decq', 8)):
        for mode, compiled, b in modes:
            dit = MODELS.build(
                dict(type='DiTDH', arch=arch, in_channels=ch, grid_size=grid,
                     num_queries=q)).to(device).train()
            opt = torch.optim.AdamW(dit.parameters(), lr=2e-4,
                                    betas=(0.9, 0.95), fused=device == 'cuda')
            model = torch.compile(dit) if compiled else dit
            x = {'patch': torch.randn(b, ch, grid, grid, device=device)}
            if q:
                x['query'] = torch.randn(b, q, ch, device=device)
            y = torch.randint(0, 1000, (b, ), device=device)

            def step(model=model, dit=dit, opt=opt, x=x, y=y):
                with torch.autocast(device, dtype):
                    loss = loss_fn(model, x, y)['loss']
                loss.backward()
                torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)

            try:
                r = timer(step)
                r['images_per_s'] = b / r['seconds']
            except torch.OutOfMemoryError:
                r = dict(error='out of memory')
            r['batch_size'] = b
            out[f'{name}_{mode}'] = r
            del model, dit, opt
            if device == 'cuda':
                torch.cuda.empty_cache()
    return out


def to_markdown(results: dict) -> str:
    lines = ['| part | setting | img/s | peak GiB | DecQ / RAE time |',
             '|---|---|---|---|---|']
    for part, rows in results.items():
        if not isinstance(rows, dict) or part == 'env':
            continue
        for key, r in rows.items():
            if 'error' in r:
                lines.append(f'| {part} | {key} | {r["error"]} | | |')
                continue
            ratio = ''
            if key.startswith('decq'):
                base = rows.get(key.replace('decq', 'rae', 1), {})
                if 'seconds' in base:
                    ratio = f'{r["seconds"] / base["seconds"]:.3f}'
            lines.append(f'| {part} | {key} | {r["images_per_s"]:.1f} | '
                         f'{r["peak_gib"]:.1f} | {ratio} |')
    return '\n'.join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = 'cpu' if args.tiny or not torch.cuda.is_available() else 'cuda'
    dtype = torch.bfloat16
    if device == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
    from mmengine.registry import init_default_scope
    init_default_scope('decq_plugin')
    timer = Timer(device, args.iters, args.warmup)
    results = dict(env=dict(
        device=torch.cuda.get_device_name() if device == 'cuda' else 'cpu',
        torch=torch.__version__, dtype='bfloat16 autocast',
        iters=args.iters, warmup=args.warmup))
    benches = dict(encoder=bench_encoder, decoder=bench_decoder,
                   dit=bench_dit)
    for part in args.parts.split(','):
        results[part] = benches[part](args, timer, device, dtype)
        print(part, json.dumps(results[part], indent=1), flush=True)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(osp.join(args.out_dir, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    table = to_markdown(results)
    with open(osp.join(args.out_dir, 'results.md'), 'w') as f:
        f.write(table + '\n')
    print(table)
    return results


if __name__ == '__main__':
    main()
