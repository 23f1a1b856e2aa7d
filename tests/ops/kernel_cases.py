"""Run by tests/ops/test_fused_kernels.py in a child process with
``TRITON_INTERPRET=1`` (Triton picks the interpreter when a kernel is
defined, so it must be set before the kernels are imported).

Each case runs a fused op and its reference on the same inputs, then
backpropagates the same random cotangents through both, and prints one JSON
object: ``{case: {tensor: [max abs difference, max abs of reference]}}``
plus ``kernels_ran``.
"""
import copy
import json

import torch

from decq_plugin.models.diffusion.dit_dh import DiTDH
from decq_plugin.models.diffusion.layers import axial_rope_tables
from decq_plugin.ops import fused, reference
from decq_plugin.ops.fused_block import fuse_adaln_blocks


def compare(fn_a, fn_b, inputs, dtype=None):
    """Outputs and input gradients of ``fn_a`` vs ``fn_b``."""
    results = []
    for fn in (fn_a, fn_b):
        args = [t.detach().clone().requires_grad_(t.is_floating_point())
                for t in inputs]
        with torch.autocast('cpu', dtype=dtype or torch.float32,
                            enabled=dtype is not None):
            out = fn(*args)
        outs = out if isinstance(out, tuple) else (out, )
        gen = torch.Generator().manual_seed(7)
        loss = sum((o.float() * torch.randn(o.shape, generator=gen)).sum()
                   for o in outs)
        loss.backward()
        results.append(list(outs) + [a.grad for a in args
                                     if a.grad is not None])
    return {f'tensor{i}': [float((a.float() - b.float()).abs().max()),
                           float(b.float().abs().max())]
            for i, (a, b) in enumerate(zip(*(
                [t.detach() for t in r] for r in results)))}


def main():
    torch.manual_seed(0)
    cases = {'kernels_ran': fused.kernels_run_on(torch.zeros(1))}
    b, n, d = 2, 37, 48  # n not a multiple of the backward's row block
    for rows in (1, n):
        x, upd = torch.randn(b, n, d), torch.randn(b, n, d)
        w = torch.randn(d)
        shift, scale, gate = torch.randn(3, b, rows, d).unbind(0)
        cases[f'norm_cond{rows}'] = compare(
            lambda *a: fused.rms_norm_modulate(*a, eps=1e-6),
            lambda *a: reference.rms_norm_modulate(*a, eps=1e-6),
            [x, w, shift, scale])
        cases[f'add_norm_cond{rows}'] = compare(
            lambda *a: fused.add_rms_norm_modulate(*a, eps=1e-6),
            lambda *a: reference.add_rms_norm_modulate(*a, eps=1e-6),
            [x, gate, upd, w, shift, scale])
    # bf16 autocast: bf16 condition and update, float32 residual stream
    x = torch.randn(b, n, d)
    w = torch.randn(d)
    shift, scale, gate = torch.randn(3, b, 1, d).bfloat16().unbind(0)
    upd = torch.randn(b, n, d).bfloat16()
    cases['add_norm_bf16'] = compare(
        lambda *a: fused.add_rms_norm_modulate(*a, eps=1e-6),
        lambda *a: reference.add_rms_norm_modulate(
            *a, eps=1e-6, out_dtype=torch.bfloat16),
        [x, gate, upd, w, shift, scale], dtype=torch.bfloat16)
    shift, scale, gate = torch.randn(3, b, n, d).bfloat16().unbind(0)
    cases['add_norm_bf16_per_token'] = compare(
        lambda *a: fused.add_rms_norm_modulate(*a, eps=1e-6),
        lambda *a: reference.add_rms_norm_modulate(
            *a, eps=1e-6, out_dtype=torch.bfloat16),
        [x, gate, upd, w, shift, scale], dtype=torch.bfloat16)
    hidden = torch.randn(3, 5, 2 * 40)
    cases['swiglu'] = compare(fused.swiglu, reference.swiglu, [hidden])
    cases['swiglu_bf16'] = compare(fused.swiglu, reference.swiglu,
                                   [hidden.bfloat16()])
    cos, sin = axial_rope_tables(12, 4, num_extra=3)  # d/2 = 6 pairs
    qkv = torch.randn(2, 19, 3, 2, 12)
    cases['rope'] = compare(lambda q: fused.rope_qkv(q, cos, sin),
                            lambda q: reference.rope_qkv(q, cos, sin), [qkv])
    # more columns than one tile (3 * 6 * 24 = 432 > 256)
    cos, sin = axial_rope_tables(24, 3, num_extra=2)
    qkv = torch.randn(2, 11, 3, 6, 24).bfloat16()
    cases['rope_bf16'] = compare(lambda q: fused.rope_qkv(q, cos, sin),
                                 lambda q: reference.rope_qkv(q, cos, sin),
                                 [qkv])
    # control: a reference that is slightly wrong must be told apart
    cases['control_wrong_scale'] = compare(
        lambda *a: fused.rms_norm_modulate(*a, eps=1e-6),
        lambda x, w, s, c: reference.rms_norm_modulate(x, w, s, c * 1.01,
                                                       eps=1e-6),
        [x, w, shift.float(), scale.float()])
    # a whole DiT-DH (DecQ mode: per-token head conditions, query tokens)
    arch = dict(body_width=32, body_depth=2, body_heads=2, head_width=48,
                head_depth=1, head_heads=2)
    # the plain blocks (the kernels are the default): the reference
    model = DiTDH(arch=arch, in_channels=8, grid_size=4, num_queries=3,
                  num_classes=10, fused_kernels=False).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            # 0.1: larger weights make the gradients of this 3-block model
            # ill-conditioned (float32 vs float64 already differ there)
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    twin = copy.deepcopy(model)
    fuse_adaln_blocks(twin)
    t, y = torch.rand(2), torch.tensor([1, 2])
    cases['ditdh_decq'] = compare(
        lambda p, q: tuple(twin({'patch': p, 'query': q}, t, y).values()),
        lambda p, q: tuple(model({'patch': p, 'query': q}, t, y).values()),
        [torch.randn(2, 8, 4, 4), torch.randn(2, 3, 8)])
    # training with the norms' and SwiGLU's outputs recomputed in the
    # backward (selective checkpoint) against the plain blocks (no class
    # dropout: training and evaluation mode compute the same)
    recomputing = DiTDH(arch=arch, in_channels=8, grid_size=4,
                        num_queries=3, num_classes=10, class_dropout=0.0,
                        recompute_fused=True).train()
    recomputing.load_state_dict(model.state_dict())
    cases['ditdh_recompute'] = compare(
        lambda p, q: tuple(recomputing({'patch': p, 'query': q}, t,
                                       y).values()),
        lambda p, q: tuple(model({'patch': p, 'query': q}, t, y).values()),
        [torch.randn(2, 8, 4, 4), torch.randn(2, 3, 8)])
    cases['recompute_backward_ops'] = backward_ops(recomputing, t, y)
    print(json.dumps(cases))


def backward_ops(model, t, y) -> dict:
    """How often each ``decq_plugin`` op runs in one backward pass."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            if name.startswith('decq_plugin.'):
                seen[name] = seen.get(name, 0) + 1
            return func(*args, **(kwargs or {}))

    seen = {}
    out = model({'patch': torch.randn(2, 8, 4, 4),
                 'query': torch.randn(2, 3, 8)}, t, y)
    with Count():
        sum(v.square().sum() for v in out.values()).backward()
    return seen


if __name__ == '__main__':
    main()
