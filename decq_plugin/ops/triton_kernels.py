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
                tl.store(dshift_ptr + row * D + cols,
                         dout.to(dshift_ptr.dtype.element_ty), mask=mask)
                tl.store(dscale_ptr + row * D + cols,
                         (dout * normed).to(dscale_ptr.dtype.element_ty),
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
                    tl.store(dgate_ptr + row * D + cols,
                             (dx * upd).to(dgate_ptr.dtype.element_ty),
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
def rope_qkv_kernel(src_ptr, cos_ptr, sin_ptr, dst_ptr, B, N,
                    H: tl.constexpr, HEAD_DIM: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
                    FORWARD: tl.constexpr):
    """Between token-major ``qkv`` [B, N, 3, H, d] and head-major
    [3, B, H, N, d], rotating q and k (``FORWARD``: token-major to
    head-major by +angle; else head-major gradients back, by -angle).

    Program (token block, column block): a [BLOCK_N, BLOCK_C] tile of the
    token-major rows (3 * H * d contiguous values per token), so the
    token-major side is read or written in whole rows. A rotated pair
    (2k, 2k+1) never crosses an even column boundary, so each tile
    rotates on its own: ``x * cos + partner * sin`` with ``partner`` the
    pairwise ``(-odd, even)`` of the tile."""
    D: tl.constexpr = H * HEAD_DIM
    tokens = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = (tokens // N).to(tl.int64)
    n = tokens % N
    part = cols // D
    h = (cols % D) // HEAD_DIM
    e = cols % HEAD_DIM
    mask = (tokens < B * N)[:, None] & (cols < 3 * D)[None, :]
    tok_off = tokens.to(tl.int64)[:, None] * (3 * D) + cols[None, :]
    head_off = (((part[None, :] * B + b[:, None]) * H + h[None, :]) * N +
                n[:, None]) * HEAD_DIM + e[None, :]
    if FORWARD:
        src_off, dst_off = tok_off, head_off
    else:
        src_off, dst_off = head_off, tok_off
    x = tl.load(src_ptr + src_off, mask=mask, other=0.).to(tl.float32)
    rotate = mask & (part < 2)[None, :]
    tab = n[:, None] * HEAD_DIM + e[None, :]
    cos = tl.load(cos_ptr + tab, mask=rotate, other=1.)
    sin = tl.load(sin_ptr + tab, mask=rotate, other=0.)
    if not FORWARD:
        sin = -sin
    even, odd = tl.split(tl.reshape(x, (BLOCK_N, BLOCK_C // 2, 2)))
    partner = tl.reshape(tl.join(-odd, even), (BLOCK_N, BLOCK_C))
    out = x * cos + partner * sin
    tl.store(dst_ptr + dst_off, out.to(dst_ptr.dtype.element_ty), mask=mask)
