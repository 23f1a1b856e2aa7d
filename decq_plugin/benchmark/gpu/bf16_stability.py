"""bf16 against TF32 for DiT-DH-S: same seed, same data, same draws.

Run through ``tools/analysis/benchmark_gpu.py --stability``. Each run trains
a DiT-DH-S (DecQ mode, 8 queries) from the same initial weights with the
project's flow-matching loss, fused AdamW (lr 2e-4, betas 0.9/0.95), grad
clip 1.0 and compiled blocks, for ``--stability-steps`` steps, on structured
synthetic latents (class means plus a low-rank spread, so the loss falls as
on real latents rather than sitting at the noise floor). Noise, times and
class dropout come from torch's RNG, seeded identically, so the only
difference between the runs is the arithmetic. Records both loss curves
(JSON and a PNG), the non-finite steps, and how far the smoothed curves are
apart.
"""
import json
import os
import os.path as osp
import time
from typing import Dict, List

import torch

from .synthetic_data import class_structure, structured_samples

TINY = dict(body_width=32, body_depth=2, body_heads=2, head_width=48,
            head_depth=1, head_heads=2)


def synthetic_latents(n: int, shapes: Dict[str, tuple], classes: int,
                      device: str, seed: int = 0, rank: int = 16) -> tuple:
    """``n`` latents per ``shapes`` (unit-ish variance) and labels [n]:
    class mean + low-rank spread + a little white noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n, ), generator=g)
    out = {}
    for key, shape in shapes.items():
        dim = int(torch.tensor(shape).prod())
        means, basis = class_structure(classes, dim, rank, g)
        out[key] = structured_samples(means, basis, labels, g).reshape(
            n, *shape).to(device)
    return out, labels.to(device)


def train_curve(precision: str, steps: int, batch: int, device: str,
                dry: bool, seed: int = 0) -> dict:
    """Loss per step of one run in ``precision`` ('bf16' or 'tf32')."""
    from decq_plugin.models.compile_regions import compile_regions
    from decq_plugin.models.diffusion.dit_dh import DiTDH
    from decq_plugin.models.losses.flow_matching import FlowMatchingLoss
    ch, grid, q, classes = (8, 4, 2, 10) if dry else (768, 16, 8, 100)
    torch.manual_seed(seed)
    model = DiTDH(arch=TINY if dry else 'S', in_channels=ch, grid_size=grid,
                  num_queries=q, num_classes=classes).to(device).train()
    compile_regions(model, dict(backend='eager') if dry else True,
                    ['body_blocks', 'head_blocks'])
    data, labels = synthetic_latents(
        max(4 * batch, 64 if dry else 8192),
        {'patch': (ch, grid, grid), 'query': (q, ch)}, classes, device)
    loss_fn = FlowMatchingLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.95),
                            weight_decay=0.0, fused=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    order = torch.Generator().manual_seed(seed + 1)
    losses: List[torch.Tensor] = []
    t0 = time.time()
    for _ in range(steps):
        idx = torch.randint(0, labels.shape[0], (batch, ),
                            generator=order).to(device)
        x = {k: v[idx] for k, v in data.items()}
        with torch.autocast(device, torch.bfloat16,
                            enabled=precision == 'bf16'):
            loss = loss_fn(model, x, labels[idx])['loss']
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach().float())
    curve = torch.stack(losses).cpu()
    seconds = time.time() - t0
    finite = torch.isfinite(curve)
    return dict(precision=precision, steps=steps, batch=batch,
                seconds=round(seconds, 1),
                steps_per_s=round(steps / seconds, 2),
                non_finite=int((~finite).sum()),
                loss=[round(v, 5) for v in curve.tolist()])


def smooth(values: List[float], window: int) -> torch.Tensor:
    x = torch.tensor(values, dtype=torch.float64)
    kernel = torch.ones(1, 1, window, dtype=torch.float64) / window
    return torch.nn.functional.conv1d(x.view(1, 1, -1), kernel).view(-1)


def compare(a: List[float], b: List[float], window: int) -> dict:
    """How far two loss curves are apart (smoothed over ``window``)."""
    window = max(1, min(window, len(a)))
    sa, sb = smooth(a, window), smooth(b, window)
    tail = max(1, len(a) // 10)
    last_a, last_b = sum(a[-tail:]) / tail, sum(b[-tail:]) / tail
    return dict(window=window,
                max_abs_diff_smoothed=round(float((sa - sb).abs().max()), 5),
                max_rel_diff_smoothed=round(float(
                    ((sa - sb).abs() / sb.abs().clamp_min(1e-8)).max()), 4),
                last_tenth_mean=dict(bf16=round(last_a, 5),
                                     tf32=round(last_b, 5)),
                first_loss=dict(bf16=a[0], tf32=b[0]))


def plot(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    window = results['comparison']['window']
    for name in ('bf16', 'tf32'):
        curve = results[name]['loss']
        ax.plot(curve, alpha=0.25, linewidth=0.6)
        ax.plot(range(window - 1, len(curve)), smooth(curve, window).numpy(),
                label=f'{name} (moving mean {window})')
    env = results['env']
    ax.set(xlabel='step', ylabel='flow-matching loss', yscale='log',
           title=f"DiT-DH-S DecQ, batch {results['bf16']['batch']}, "
           f"{env['gpu']}, torch {env['torch']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_stability(out_dir: str, env: dict, dry: bool = False,
                  steps: int = 2000, batch: int = 64) -> dict:
    """Both runs (``dry``: 3 steps of a tiny model on the CPU), their
    comparison, and ``bf16_stability.json`` / ``.png`` in ``out_dir``."""
    device = 'cpu' if dry or not torch.cuda.is_available() else 'cuda'
    steps = 3 if dry else steps
    batch = 4 if dry else batch
    os.makedirs(out_dir, exist_ok=True)
    results = dict(env=env)
    for precision in ('bf16', 'tf32'):
        results[precision] = train_curve(precision, steps, batch, device, dry)
        print(precision, {k: v for k, v in results[precision].items()
                          if k != 'loss'}, flush=True)
        if device == 'cuda':
            torch.cuda.empty_cache()
    results['comparison'] = compare(results['bf16']['loss'],
                                    results['tf32']['loss'],
                                    window=2 if dry else 50)
    print('comparison', results['comparison'], flush=True)
    with open(osp.join(out_dir, 'bf16_stability.json'), 'w') as f:
        json.dump(results, f)
    plot(results, osp.join(out_dir, 'bf16_stability.png'))
    return results
