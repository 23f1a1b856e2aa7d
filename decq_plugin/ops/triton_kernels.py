"""Triton kernels of the fused ops (forward and backward), launched by
:mod:`decq_plugin.ops.fused`. Imported only where Triton is installed.

Layout conventions: rows are tokens (``M = B * N``), each ``D`` wide and
contiguous; a condition tensor (shift, scale, gate) has one row per sample
(``rows_per_cond = N``) or per token (``rows_per_cond = 1``) and its own
row stride, so the chunks of one modulation output are read in place.
Statistics and arithmetic are float32; stores cast to the output dtype.
"""
import triton
import triton.language as tl


@triton.jit
def _cond_row(row, rows_per_cond):
    return row // rows_per_cond


@triton.jit
def norm_modulate_fwd_kernel(
        x_ptr, gate_ptr, update_ptr, w_ptr, shift_ptr, scale_ptr,
        xnew_ptr, out_ptr, rstd_ptr,
        D, rows_per_cond, stride_gate, stride_shift, stride_scale, eps,
        HAS_RESIDUAL: tl.constexpr, BLOCK_D: tl.constexpr):
    """One row: ``x_new = x + gate * update`` (if HAS_RESIDUAL), then
    ``out = x_new * rstd * w * (1 + scale) + shift``; saves ``rstd``."""
    row = tl.program_id(0).to(tl.int64)
    cond = _cond_row(row, rows_per_cond)
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    x = tl.load(x_ptr + row * D + cols, mask=mask, other=0.).to(tl.float32)
    if HAS_RESIDUAL:
        gate = tl.load(gate_ptr + cond * stride_gate + cols, mask=mask,
                       other=0.).to(tl.float32)
        upd = tl.load(update_ptr + row * D + cols, mask=mask,
                      other=0.).to(tl.float32)
        x = x + gate * upd
        # The norm sees x_new as stored (x's dtype), as the reference does.
        x = x.to(xnew_ptr.dtype.element_ty)
        tl.store(xnew_ptr + row * D + cols, x, mask=mask)
        x = x.to(tl.float32)
    rstd = 1. / tl.sqrt(tl.sum(x * x, axis=0) / D + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.).to(tl.float32)
    shift = tl.load(shift_ptr + cond * stride_shift + cols, mask=mask,
                    other=0.).to(tl.float32)
    scale = tl.load(scale_ptr + cond * stride_scale + cols, mask=mask,
                    other=0.).to(tl.float32)
    out = x * rstd * w * (1. + scale) + shift
    tl.store(out_ptr + row * D + cols, out.to(out_ptr.dtype.element_ty),
             mask=mask)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def norm_modulate_bwd_kernel(
        dout_ptr, dxnew_ptr, xnew_ptr, rstd_ptr, w_ptr, scale_ptr,
        gate_ptr, update_ptr,
        dx_ptr, dupdate_ptr, dgate_ptr, dshift_ptr, dscale_ptr, dw_ptr,
        N, D, stride_scale, stride_gate,
        HAS_RESIDUAL: tl.constexpr, PER_TOKEN: tl.constexpr,
        ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """Program (b, c) handles rows ``b*N + c*ROWS ...`` (at most ROWS, all
    of sample b). Writes per-row ``dx`` (and ``dupdate``); per-program
    partial sums ``[P, D]`` of ``dw`` and, with one condition per sample,
    of ``dshift``/``dscale``/``dgate`` (per token: per-row values)."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    prog = b * tl.num_programs(1) + c
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    w = tl.load(w_ptr + cols, mask=mask, other=0.).to(tl.float32)
    acc_w = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_shift = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_scale = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_gate = tl.zeros([BLOCK_D], dtype=tl.float32)
    if not PER_TOKEN:
        scale = tl.load(scale_ptr + b * stride_scale + cols, mask=mask,
                        other=0.).to(tl.float32)
        if HAS_RESIDUAL:
            gate = tl.load(gate_ptr + b * stride_gate + cols, mask=mask,
                           other=0.).to(tl.float32)
    start = c * ROWS
    for i in range(ROWS):
        n = start + i
        if n < N:
            row = b * N + n
            if PER_TOKEN:
                scale = tl.load(scale_ptr + row * stride_scale + cols,
                                mask=mask, other=0.).to(tl.float32)
            dout = tl.load(dout_ptr + row * D + cols, mask=mask,
                           other=0.).to(tl.float32)
            x = tl.load(xnew_ptr + row * D + cols, mask=mask,
                        other=0.).to(tl.float32)
            rstd = tl.load(rstd_ptr + row)
            xhat = x * rstd
            normed = xhat * w
            dn = dout * (1. + scale)
            acc_w += dn * xhat
            dxhat = dn * w
            dx = rstd * (dxhat - xhat * (tl.sum(dxhat * xhat, axis=0) / D))
            if PER_TOKEN:
                tl.store(dshift_ptr + row * D + cols, dout, mask=mask)
                tl.store(dscale_ptr + row * D + cols, dout * normed,
                         mask=mask)
            else:
                acc_shift += dout
                acc_scale += dout * normed
            if HAS_RESIDUAL:
                dx += tl.load(dxnew_ptr + row * D + cols, mask=mask,
                              other=0.).to(tl.float32)
                upd = tl.load(update_ptr + row * D + cols, mask=mask,
                              other=0.).to(tl.float32)
                if PER_TOKEN:
                    gate = tl.load(gate_ptr + row * stride_gate + cols,
                                   mask=mask, other=0.).to(tl.float32)
                    tl.store(dgate_ptr + row * D + cols, dx * upd,
                             mask=mask)
                else:
                    acc_gate += dx * upd
                tl.store(dupdate_ptr + row * D + cols,
                         (dx * gate).to(dupdate_ptr.dtype.element_ty),
                         mask=mask)
            tl.store(dx_ptr + row * D + cols,
                     dx.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_ptr + prog * D + cols, acc_w, mask=mask)
    if not PER_TOKEN:
        tl.store(dshift_ptr + prog * D + cols, acc_shift, mask=mask)
        tl.store(dscale_ptr + prog * D + cols, acc_scale, mask=mask)
        if HAS_RESIDUAL:
            tl.store(dgate_ptr + prog * D + cols, acc_gate, mask=mask)


@triton.jit
def swiglu_fwd_kernel(h_ptr, out_ptr, F, BLOCK: tl.constexpr):
    """Row ``r``, columns block ``j``: ``out = silu(a) * b`` with
    ``a = h[r, :F]``, ``b = h[r, F:]``."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < F
    a = tl.load(h_ptr + row * 2 * F + cols, mask=mask,
                other=0.).to(tl.float32)
    b = tl.load(h_ptr + row * 2 * F + F + cols, mask=mask,
                other=0.).to(tl.float32)
    out = a * tl.sigmoid(a) * b
    tl.store(out_ptr + row * F + cols, out.to(out_ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def swiglu_bwd_kernel(dout_ptr, h_ptr, dh_ptr, F, BLOCK: tl.constexpr):
    """Gradients of ``a`` and ``b`` written into ``dh`` [M, 2F] (the
    layout of the projection that produced ``h``)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < F
    a = tl.load(h_ptr + row * 2 * F + cols, mask=mask,
                other=0.).to(tl.float32)
    b = tl.load(h_ptr + row * 2 * F + F + cols, mask=mask,
                other=0.).to(tl.float32)
    dout = tl.load(dout_ptr + row * F + cols, mask=mask,
                   other=0.).to(tl.float32)
    sig = tl.sigmoid(a)
    silu = a * sig
    da = dout * b * sig * (1. + a * (1. - sig))
    db = dout * silu
    tl.store(dh_ptr + row * 2 * F + cols, da.to(dh_ptr.dtype.element_ty),
             mask=mask)
    tl.store(dh_ptr + row * 2 * F + F + cols,
             db.to(dh_ptr.dtype.element_ty), mask=mask)


@triton.jit
def rope_qkv_kernel(src_ptr, cos_ptr, sin_ptr, dst_ptr, N, H,
                    HALF: tl.constexpr, BLOCK_HALF: tl.constexpr,
                    BLOCK_N: tl.constexpr, FORWARD: tl.constexpr):
    """Between token-major ``qkv`` [B, N, 3, H, d] and head-major
    [3, B, H, N, d], rotating q and k (``FORWARD``: token-major to
    head-major, by +angle; else head-major gradients back, by -angle).
    Program (b*H + h, token block, part) with part 0 q, 1 k, 2 v."""
    bh = tl.program_id(0).to(tl.int64)
    part = tl.program_id(2)
    b = bh // H
    h = bh % H
    B = tl.num_programs(0) // H
    d = 2 * HALF
    ns = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    pairs = tl.arange(0, BLOCK_HALF)  # HALF = d / 2 pairs, padded
    nmask = (ns < N)[:, None] & (pairs < HALF)[None]
    # offsets of the even channel of each pair, both layouts
    tok = (((b * N + ns[:, None]) * 3 + part) * H + h) * d + 2 * pairs[None]
    head = (((part * B + b) * H + h) * N + ns[:, None]) * d + 2 * pairs[None]
    if FORWARD:
        src_off, dst_off = tok, head
    else:
        src_off, dst_off = head, tok
    even = tl.load(src_ptr + src_off, mask=nmask, other=0.).to(tl.float32)
    odd = tl.load(src_ptr + src_off + 1, mask=nmask, other=0.).to(tl.float32)
    if part < 2:
        tab = ns[:, None] * d + 2 * pairs[None]
        cos = tl.load(cos_ptr + tab, mask=nmask, other=1.)
        sin = tl.load(sin_ptr + tab, mask=nmask, other=0.)
        if not FORWARD:
            sin = -sin
        even, odd = even * cos - odd * sin, odd * cos + even * sin
    tl.store(dst_ptr + dst_off, even.to(dst_ptr.dtype.element_ty),
             mask=nmask)
    tl.store(dst_ptr + dst_off + 1, odd.to(dst_ptr.dtype.element_ty),
             mask=nmask)
