"""The fused ops of :mod:`decq_plugin.ops.fused` in isolation, at the
shapes of DiT-DH-XL, beside the expressions they replace (eager and
compiled by Inductor), forward + backward.

Each row: median milliseconds of one forward and backward (the same random
cotangents) of ``eager`` (the reference expression), ``inductor``
(``torch.compile`` of it, the code path of ``--compile`` today) and
``fused`` (the Triton op), the bytes the op must move at least (inputs,
outputs, gradients, once each) and the bandwidth that implies.
"""
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from decq_plugin.models.diffusion.layers import axial_rope_tables
from .timing import sync


def _shapes(batch: int, dry: bool) -> Dict[str, int]:
    if dry:
        return dict(b=batch, n=11, body=48, head=64, body_heads=4,
                    head_heads=4, hidden=40, grid=3, queries=2)
    return dict(b=batch, n=264, body=1152, head=2048, body_heads=16,
                head_heads=16, hidden=3072, grid=16, queries=8)


def op_cases(batch: int, device: str, dry: bool = False) -> List[dict]:
    """(name, fused fn, reference fn, inputs) at DiT-DH-XL's shapes in DecQ
    mode (256 patches + 8 queries); bf16 activations, float32 residual
    stream, as under bf16 autocast."""
    from decq_plugin.ops import fused, reference
    s = _shapes(batch, dry)
    b, n = s['b'], s['n']
    bf16 = dict(device=device, dtype=torch.bfloat16)
    f32 = dict(device=device, dtype=torch.float32)
    cases = []
    for part, width, per_token in (('body', s['body'], False),
                                   ('head', s['head'], True)):
        rows = n if per_token else 1
        x = torch.randn(b, n, width, **f32)
        w = torch.ones(width, **f32)
        # the chunks of one modulation output, read in place
        mod = torch.randn(b, rows, 6 * width, **bf16) * 0.1
        shift, scale, gate = mod[..., :width], mod[..., width:2 * width], \
            mod[..., 2 * width:3 * width]
        upd = torch.randn(b, n, width, **bf16)
        cond = 'token' if per_token else 'sample'
        cases.append(dict(
            name=f'rms_norm_modulate {part} [{b},{n},{width}] cond/{cond}',
            fused=lambda *a: fused.rms_norm_modulate(
                *a, eps=1e-6, out_dtype=torch.bfloat16),
            reference=lambda *a: reference.rms_norm_modulate(
                *a, eps=1e-6, out_dtype=torch.bfloat16),
            inputs=[x, w, shift, scale]))
        cases.append(dict(
            name=f'add_rms_norm_modulate {part} [{b},{n},{width}] '
            f'cond/{cond}',
            fused=lambda *a: fused.add_rms_norm_modulate(
                *a, eps=1e-6, out_dtype=torch.bfloat16),
            reference=lambda *a: reference.add_rms_norm_modulate(
                *a, eps=1e-6, out_dtype=torch.bfloat16),
            inputs=[x, gate, upd, w, shift, scale]))
    hidden = torch.randn(b * n, 2 * s['hidden'], **bf16)
    cases.append(dict(name=f'swiglu body [{b * n},{2 * s["hidden"]}]',
                      fused=fused.swiglu, reference=reference.swiglu,
                      inputs=[hidden]))
    for part in ('body', 'head'):
        heads = s[f'{part}_heads']
        d = s[part] // heads
        cos, sin = (t.to(device) for t in axial_rope_tables(
            d, s['grid'], s['queries']))
        cos, sin = cos[:n], sin[:n]
        qkv = torch.randn(b, n, 3, heads, d, **bf16)
        cases.append(dict(
            name=f'rope_qkv {part} [{b},{n},3,{heads},{d}]',
            fused=lambda q, c=cos, si=sin: fused.rope_qkv(q, c, si),
            reference=lambda q, c=cos, si=sin: reference.rope_qkv(q, c, si),
            inputs=[qkv]))
    return cases


def _min_bytes(inputs: List[torch.Tensor], outputs) -> int:
    """Inputs read and gradients written once, outputs written and their
    gradients read once."""
    moved = sum(2 * t.numel() * t.element_size() for t in inputs)
    return moved + sum(2 * o.numel() * o.element_size() for o in outputs)


def _time_fwd_bwd(fn: Callable, inputs: List[torch.Tensor], device: str,
                  iters: int) -> tuple:
    args = [t.detach().requires_grad_(True) for t in inputs]
    out = fn(*args)
    outs = out if isinstance(out, tuple) else (out, )
    grads = [torch.randn_like(o) for o in outs]

    def step():
        for a in args:
            a.grad = None
        res = fn(*args)
        res = res if isinstance(res, tuple) else (res, )
        torch.autograd.backward(res, grads)

    for _ in range(2):
        step()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] * 1e3, outs


def bench_ops(batch: int, device: str, iters: int = 20,
              dry: bool = False) -> List[dict]:
    """One row per op (see the module doc)."""
    compile_kw = dict(backend='eager') if dry else {}
    rows = []
    for case in op_cases(batch, device, dry):
        row = dict(op=case['name'])
        try:
            compiled = torch.compile(case['reference'], dynamic=False,
                                     **compile_kw)
            for key, fn in (('eager', case['reference']),
                            ('inductor', compiled), ('fused', case['fused'])):
                ms, outs = _time_fwd_bwd(fn, case['inputs'], device, iters)
                row[f'{key}_ms'] = round(ms, 3)
            moved = _min_bytes(case['inputs'], outs)
            row['min_mb'] = round(moved / 1e6, 1)
            row['fused_gb_s'] = round(moved / row['fused_ms'] / 1e6, 1)
            row['inductor_gb_s'] = round(moved / row['inductor_ms'] / 1e6, 1)
            row['fused_vs_inductor'] = round(
                row['inductor_ms'] / row['fused_ms'], 3)
        except Exception as err:  # keep the other ops' numbers
            row['error'] = f'{type(err).__name__}: {err}'[:500]
        rows.append(row)
        print('op', row, flush=True)
        torch._dynamo.reset()
    return rows


def _attention_errors(qkv: List[torch.Tensor], split: int,
                      order: Optional[Sequence[str]] = None) -> dict:
    """Largest |error| of ``attend`` (backends tried in ``order``, inputs'
    dtype) on the first two samples against float32 math attention:
    output and dq for a fixed cotangent."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from decq_plugin.models.diffusion.layers import attend
    small = [t[:2].detach().clone().requires_grad_(True) for t in qkv]
    ref_in = [t.detach().float().requires_grad_(True) for t in small]
    cot = torch.randn_like(ref_in[0])
    out = attend(*small, split, order)
    out.backward(cot.to(out.dtype))
    with sdpa_kernel([SDPBackend.MATH]):
        ref = attend(*ref_in, 0)
        ref.backward(cot)
    return dict(
        out_err=round(float((out.float() - ref).abs().max()), 5),
        dq_err=round(float((small[0].grad.float() - ref_in[0].grad)
                           .abs().max()), 5))


def bench_attention(batch: int, device: str, iters: int = 20,
                    dry: bool = False) -> List[dict]:
    """SDPA forward + backward at DiT-DH-XL's attention shapes: RAE mode's
    256 tokens, DecQ mode's 264 in one call (``joint``) and split after
    the 256 patches (``split``, :func:`~decq_plugin.models.diffusion.
    layers.attend`), per SDPA backend; median ms, and the largest error of
    the output and of the query gradient against float32 math attention
    (``out_err``, ``dq_err``)."""
    from decq_plugin.models.diffusion.layers import attend
    from decq_plugin.models.sdpa_order import resolve_order
    s = _shapes(batch, dry)
    patches = s['grid'] ** 2
    dtype = dict(device=device, dtype=torch.bfloat16)
    rows = []
    for part in ('body', 'head'):
        heads = s[f'{part}_heads']
        d = s[part] // heads
        for backend in ('cudnn', 'flash') if device == 'cuda' else (None, ):
            for label, n, split in (('rae', patches, 0),
                                    ('joint', s['n'], 0),
                                    ('split', s['n'], patches)):
                row = dict(part=part, backend=backend or 'default',
                           layout=label, shape=[s['b'], heads, n, d])
                qkv = [torch.randn(s['b'], heads, n, d, **dtype)
                       for _ in range(3)]
                try:
                    order = resolve_order(backend)
                    ms, _ = _time_fwd_bwd(
                        lambda q, k, v, at=split: attend(q, k, v, at, order),
                        qkv, device, iters)
                    row.update(_attention_errors(qkv, split, order))
                    row['ms'] = round(ms, 3)
                except Exception as err:  # keep the other rows
                    row['error'] = f'{type(err).__name__}: {err}'[:300]
                rows.append(row)
                print('attention', row, flush=True)
    return rows
