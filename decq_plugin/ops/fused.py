"""Fused kernels of the DiT-DH block as ``torch.library`` custom ops.

    from decq_plugin.ops import fused
    h = fused.rms_norm_modulate(x, norm.weight, shift, scale, eps=1e-6)
    x, h = fused.add_rms_norm_modulate(x, gate, update, norm.weight,
                                       shift, scale, eps=1e-6)
    y = fused.swiglu(w_in(h))                  # silu(a) * b in one pass
    q, k, v = fused.rope_qkv(qkv, cos, sin).unbind(0)

Each op runs a Triton kernel (forward and backward) on CUDA tensors, and
under Triton's interpreter (``TRITON_INTERPRET=1``) on CPU tensors, which
is how the tests check the kernels against :mod:`decq_plugin.ops.reference`
without a GPU. Anywhere else (a CPU run, no Triton) the functions compute
the reference expression, so callers need no device check.

The ops are ``triton_op``\\ s: ``torch.compile`` keeps them in its graph
(no graph break) and schedules the kernels as they are. Importing this
module defines the ops in the ``decq_plugin`` namespace of ``torch.ops``.

Under autocast the norm ops write their output in the autocast dtype: the
dtype the next linear layer would cast it to (the same values, without the
float32 write and the cast).
"""
import os
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import reference

try:
    import triton
    from torch.library import triton_op, wrap_triton

    from . import triton_kernels as kernels
except ImportError:  # pragma: no cover - torch without Triton
    triton = None


def interpreting() -> bool:
    """Whether Triton kernels run on the CPU (``TRITON_INTERPRET=1``)."""
    return os.environ.get('TRITON_INTERPRET') == '1'


def kernels_run_on(tensor: Tensor) -> bool:
    """Whether the fused kernels (not the reference) handle ``tensor``."""
    if triton is None:
        return False
    return tensor.is_cuda or (tensor.device.type == 'cpu' and interpreting())


def _output_dtype(x: Tensor) -> torch.dtype:
    kind = x.device.type
    if kind in ('cuda', 'cpu') and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


def _cond_layout(cond: Tensor, n: int) -> Tuple[Tensor, int, int]:
    """A [B, S, D] condition as (tensor, rows per condition row, row
    stride), read in place where its rows are evenly strided."""
    if cond.stride(-1) != 1 or (cond.shape[1] > 1 and
                                cond.stride(0) != n * cond.stride(1)):
        cond = cond.contiguous()
    if cond.shape[1] == 1:
        return cond, n, cond.stride(0)
    return cond, 1, cond.stride(1)


def _warps(block: int) -> int:
    return 8 if block >= 2048 else 4


BWD_ROWS = 32  # rows per program of the norm backward (partial sums)


if triton is not None:

    @triton_op('decq_plugin::norm_modulate', mutates_args=())
    def _norm_modulate(x: Tensor, gate: Optional[Tensor],
                       update: Optional[Tensor], weight: Tensor,
                       shift: Tensor, scale: Tensor, eps: float,
                       out_dtype: torch.dtype
                       ) -> Tuple[Tensor, Tensor, Tensor]:
        """(out [B,N,D], x_new [B,N,D] or empty, rstd [B*N] float32)."""
        b, n, d = x.shape
        x = x.contiguous()
        shift, per, s_shift = _cond_layout(shift, n)
        scale, _, s_scale = _cond_layout(scale, n)
        residual = gate is not None
        if residual:
            gate, _, s_gate = _cond_layout(gate, n)
            update = update.contiguous()
            x_new = torch.empty_like(x)
        else:
            gate, update, s_gate = x, x, 0
            x_new = x.new_empty(0)
        out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
        rstd = torch.empty(b * n, dtype=torch.float32, device=x.device)
        block = triton.next_power_of_2(d)
        wrap_triton(kernels.norm_modulate_fwd_kernel)[(b * n, )](
            x, gate, update, weight, shift, scale, x_new, out, rstd, d, per,
            s_gate, s_shift, s_scale, eps, HAS_RESIDUAL=residual,
            BLOCK_D=block, num_warps=_warps(block))
        return out, x_new, rstd

    @triton_op('decq_plugin::norm_modulate_backward', mutates_args=())
    def _norm_modulate_backward(
            dout: Tensor, dx_new: Optional[Tensor], x_new: Tensor,
            rstd: Tensor, weight: Tensor, scale: Tensor,
            gate: Optional[Tensor], update: Optional[Tensor]
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(dx, dupdate, dgate, dshift, dscale, dweight); dupdate and dgate
        are empty without a residual. ``x_new`` is the normed input."""
        b, n, d = x_new.shape
        dout = dout.contiguous()
        scale, per, s_scale = _cond_layout(scale, n)
        per_token = per == 1
        residual = gate is not None
        chunks = triton.cdiv(n, BWD_ROWS)
        programs = b * chunks
        f32 = dict(dtype=torch.float32, device=x_new.device)
        # per token: one gradient row per condition row, in its dtype;
        # per sample: float32 partial sums, reduced below
        cond_rows = (b * n, d) if per_token else (programs, d)
        cond_dtype = dict(dtype=scale.dtype if per_token else torch.float32,
                          device=x_new.device)
        dx = torch.empty_like(x_new)
        dw = torch.empty((programs, d), **f32)
        dshift = torch.empty(cond_rows, **cond_dtype)
        dscale = torch.empty(cond_rows, **cond_dtype)
        if residual:
            gate, _, s_gate = _cond_layout(gate, n)
            update = update.contiguous()
            dx_new = dx_new.contiguous()
            dupdate = torch.empty_like(update)
            dgate = torch.empty(cond_rows, dtype=gate.dtype if per_token
                                else torch.float32, device=x_new.device)
        else:
            gate, update, dx_new, s_gate = x_new, x_new, x_new, 0
            dupdate, dgate = x_new.new_empty(0), x_new.new_empty(0)
        block = triton.next_power_of_2(d)
        wrap_triton(kernels.norm_modulate_bwd_kernel)[(b, chunks)](
            dout, dx_new, x_new, rstd, weight, scale, gate, update, dx,
            dupdate, dgate, dshift, dscale, dw, n, d, s_scale, s_gate,
            HAS_RESIDUAL=residual, PER_TOKEN=per_token, ROWS=BWD_ROWS,
            BLOCK_D=block, num_warps=_warps(block))
        if not per_token:
            dshift = dshift.view(b, chunks, d).sum(1)
            dscale = dscale.view(b, chunks, d).sum(1)
            if residual:
                dgate = dgate.view(b, chunks, d).sum(1)
        return dx, dupdate, dgate, dshift, dscale, dw.sum(0)

    def _norm_setup(ctx, inputs, output) -> None:
        x, gate, update, weight, shift, scale, _, _ = inputs
        _, x_new, rstd = output
        residual = gate is not None
        ctx.residual = residual
        ctx.cond_shape = shift.shape
        ctx.dtypes = (x.dtype, None if gate is None else gate.dtype,
                      weight.dtype, shift.dtype, scale.dtype)
        ctx.save_for_backward(x_new if residual else x, rstd, weight, scale,
                              gate, update)

    def _norm_backward(ctx, dout, dx_new, _drstd):
        x_new, rstd, weight, scale, gate, update = ctx.saved_tensors
        if ctx.residual and dx_new is None:
            dx_new = torch.zeros_like(x_new)
        dx, dupdate, dgate, dshift, dscale, dw = \
            torch.ops.decq_plugin.norm_modulate_backward(
                dout, dx_new if ctx.residual else None, x_new, rstd, weight,
                scale, gate, update)
        x_dt, gate_dt, w_dt, shift_dt, scale_dt = ctx.dtypes
        shape = ctx.cond_shape
        grads = [dx.to(x_dt), None, None, dw.to(w_dt),
                 dshift.view(shape).to(shift_dt),
                 dscale.view(shape).to(scale_dt), None, None]
        if ctx.residual:
            grads[1] = dgate.view(shape).to(gate_dt)
            grads[2] = dupdate
        return tuple(grads)

    _norm_modulate.register_autograd(_norm_backward,
                                     setup_context=_norm_setup)

    @triton_op('decq_plugin::swiglu', mutates_args=())
    def _swiglu(hidden: Tensor) -> Tensor:
        """[..., 2F] -> [..., F]."""
        hidden = hidden.contiguous()
        f = hidden.shape[-1] // 2
        rows = hidden.numel() // (2 * f)
        out = hidden.new_empty(hidden.shape[:-1] + (f, ))
        block = min(1024, triton.next_power_of_2(f))
        wrap_triton(kernels.swiglu_fwd_kernel)[(rows, triton.cdiv(f, block))](
            hidden, out, f, BLOCK=block, num_warps=4)
        return out

    @triton_op('decq_plugin::swiglu_backward', mutates_args=())
    def _swiglu_backward(dout: Tensor, hidden: Tensor) -> Tensor:
        dout = dout.contiguous()
        f = hidden.shape[-1] // 2
        rows = hidden.numel() // (2 * f)
        dhidden = torch.empty_like(hidden)
        block = min(1024, triton.next_power_of_2(f))
        wrap_triton(kernels.swiglu_bwd_kernel)[(rows, triton.cdiv(f, block))](
            dout, hidden, dhidden, f, BLOCK=block, num_warps=4)
        return dhidden

    def _swiglu_setup(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0].contiguous())

    def _swiglu_grad(ctx, dout):
        hidden, = ctx.saved_tensors
        return torch.ops.decq_plugin.swiglu_backward(dout, hidden)

    _swiglu.register_autograd(_swiglu_grad, setup_context=_swiglu_setup)

    def _launch_rope(src: Tensor, cos: Tensor, sin: Tensor, dst: Tensor,
                     b: int, n: int, heads: int, d: int,
                     forward: bool) -> None:
        block_n, block_c = 4, 256
        grid = (triton.cdiv(b * n, block_n),
                triton.cdiv(3 * heads * d, block_c))
        wrap_triton(kernels.rope_qkv_kernel)[grid](
            src, cos, sin, dst, b, n, H=heads, HEAD_DIM=d, BLOCK_N=block_n,
            BLOCK_C=block_c, FORWARD=forward, num_warps=4)

    @triton_op('decq_plugin::rope_qkv', mutates_args=())
    def _rope_qkv(qkv: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """[B, N, 3, H, d] -> [3, B, H, N, d], q and k rotated."""
        b, n, _, heads, d = qkv.shape
        qkv = qkv.contiguous()
        out = qkv.new_empty((3, b, heads, n, d))
        _launch_rope(qkv, cos.float().contiguous(), sin.float().contiguous(),
                     out, b, n, heads, d, True)
        return out

    @triton_op('decq_plugin::rope_qkv_backward', mutates_args=())
    def _rope_qkv_backward(dheads: Tensor, cos: Tensor,
                           sin: Tensor) -> Tensor:
        """[3, B, H, N, d] gradients -> [B, N, 3, H, d]."""
        _, b, heads, n, d = dheads.shape
        dheads = dheads.contiguous()
        dqkv = dheads.new_empty((b, n, 3, heads, d))
        _launch_rope(dheads, cos.float().contiguous(),
                     sin.float().contiguous(), dqkv, b, n, heads, d, False)
        return dqkv

    def _rope_setup(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1], inputs[2])

    def _rope_grad(ctx, dheads):
        cos, sin = ctx.saved_tensors
        return (torch.ops.decq_plugin.rope_qkv_backward(dheads, cos, sin),
                None, None)

    _rope_qkv.register_autograd(_rope_grad, setup_context=_rope_setup)


# ------------------------------------------------------------ public API
def rms_norm_modulate(x: Tensor, weight: Tensor, shift: Tensor,
                      scale: Tensor, eps: float = 1e-6,
                      out_dtype: Optional[torch.dtype] = None) -> Tensor:
    """``RMSNorm(x) * (1 + scale) + shift``: ``x`` [B, N, D], ``shift``/
    ``scale`` [B, 1, D] or [B, N, D] -> [B, N, D] (see module doc)."""
    out_dtype = out_dtype or _output_dtype(x)
    if not kernels_run_on(x):
        return reference.rms_norm_modulate(x, weight, shift, scale, eps,
                                           out_dtype)
    out, _, _ = torch.ops.decq_plugin.norm_modulate(
        x, None, None, weight, shift, scale, eps, out_dtype)
    return out


def add_rms_norm_modulate(
        x: Tensor, gate: Tensor, update: Tensor, weight: Tensor,
        shift: Tensor, scale: Tensor, eps: float = 1e-6,
        out_dtype: Optional[torch.dtype] = None) -> Tuple[Tensor, Tensor]:
    """``x_new = x + gate * update`` and ``rms_norm_modulate(x_new, ...)``
    in one pass: returns ``(x_new, h)``, both [B, N, D]."""
    out_dtype = out_dtype or _output_dtype(x)
    if not kernels_run_on(x):
        return reference.add_rms_norm_modulate(x, gate, update, weight,
                                               shift, scale, eps, out_dtype)
    out, x_new, _ = torch.ops.decq_plugin.norm_modulate(
        x, gate, update, weight, shift, scale, eps, out_dtype)
    return x_new, out


def swiglu(hidden: Tensor) -> Tensor:
    """``silu(a) * b`` of ``[a, b] = hidden.chunk(2, -1)``: [..., 2F] ->
    [..., F]."""
    if not kernels_run_on(hidden):
        return reference.swiglu(hidden)
    return torch.ops.decq_plugin.swiglu(hidden)


def rope_qkv(qkv: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Token-major ``qkv`` [B, N, 3, H, d] -> head-major [3, B, H, N, d]
    with q and k rotated by the [N, d] tables (v copied)."""
    if not kernels_run_on(qkv):
        return reference.rope_qkv(qkv, cos, sin)
    return torch.ops.decq_plugin.rope_qkv(qkv, cos, sin)
