"""The hand-written DiT-DH train step (flow-matching loss, fused AdamW,
grad clip 1.0, bf16 autocast, compiled blocks) timed on a device: img/s,
peak memory, counted FLOP/img, MFU against a measured matmul ceiling, and
the CFG forward per NFE."""
import json
import sys
import time
from typing import List, Optional, Sequence

import torch

from .plan import TINY_DIT, Plan
from .timing import peak_gib, timed

HEADLINE_ROWS = ('rae', 'decq', 'token-major', 'rae-code')


def bench_matmul(plan: Plan) -> dict:
    n = plan.matmul_n
    a = torch.randn(n, n, device=plan.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=plan.device, dtype=torch.bfloat16)
    seconds = timed(lambda: a @ b, plan.device, 10 if not plan.dry else 2)
    return dict(n=n, tflops=round(2 * n**3 / seconds / 1e12, 1))


def build_dit(plan: Plan, arch, num_queries: int = 8, **kwargs):
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


def time_rae_code(plan: Plan, rae_src: str, batch: int,
                  ceiling: Optional[float], **kwargs) -> dict:
    """:func:`time_dit` of the public RAE code's DiT-DH-XL, compiled whole
    as its trainer compiles it; ``kwargs`` go to :func:`time_dit`."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    compile_kw = dict(backend='eager') if plan.dry else {}
    model, ch, grid = rae_code_dit(plan, rae_src)
    try:
        return time_dit(plan, model, ch, grid, 0, batch,
                        lambda m: torch.compile(m, **compile_kw), ceiling,
                        **kwargs)
    finally:
        del model


def random_latents(batch: int, ch: int, grid: int, q: int,
                   device: str) -> dict:
    """Standard normal ``{'patch': [B,C,g,g], 'query': [B,q,C]}``."""
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
    x = random_latents(batch, ch, grid, queries, dev)
    y = torch.randint(0, 1000, (batch, ), device=dev)
    out = dict(batch=batch)
    with torch.autocast(**amp):
        out['gflop_per_img'] = round(
            flops_per_image(model,
                            random_latents(2, ch, grid, queries, dev),
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
        x2 = random_latents(2 * batch, ch, grid, queries, dev)
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


def regional_compile(plan: Plan):
    from decq_plugin.models.compile_regions import compile_regions

    def apply(model):
        compile_regions(model, plan.compile, ['body_blocks', 'head_blocks'])
        return model
    return apply


def bench_step(plan: Plan, ceiling: Optional[float]) -> dict:
    """The hand-written DiT-DH-XL DecQ step at ``tools/train.py``'s batch,
    compiled like ``model.compile=True``."""
    torch.manual_seed(0)
    model, ch, grid = build_dit(plan, 'XL')
    out = time_dit(plan, model, ch, grid, 8, plan.batch2,
                   regional_compile(plan), ceiling)
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
            model, ch, grid = build_dit(plan, 'XL', queries)
            row = time_dit(plan, model, ch, grid, queries, plan.step_batch,
                           regional_compile(plan), ceiling)
            del model
        except Exception as err:  # keep the other rows
            row = dict(error=f'{type(err).__name__}: {err}'[:500])
        finally:
            Attention.token_major = False
        rows.append(dict(what=name, **row))
        print('headline', json.dumps(rows[-1]), flush=True)
    if rae_src and 'rae-code' in rows_wanted:
        try:
            row = time_rae_code(plan, rae_src, plan.step_batch, ceiling)
        except Exception as err:
            row = dict(error=f'{type(err).__name__}: {err}'[:500])
        rows.append(dict(what='public RAE code DiTwDDTHead, torch.compile',
                         **row))
        print('headline', json.dumps(rows[-1]), flush=True)
    if plan.device == 'cuda':
        torch.cuda.empty_cache()
    return rows
