"""The PyTorch expressions the fused kernels compute: the definition each
kernel is tested against, and the path taken where no kernel runs (a CPU
without Triton's interpreter).

Shapes: ``M`` rows (``B * N`` tokens), ``D`` width, ``S`` rows of the
condition (1: one per sample, ``N``: one per token), ``H`` heads, ``d``
head dim. Norm statistics are float32, as in
:class:`decq_plugin.models.diffusion.layers.RMSNorm`.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def rms_norm_modulate(x: Tensor, weight: Tensor, shift: Tensor,
                      scale: Tensor, eps: float,
                      out_dtype: Optional[torch.dtype] = None) -> Tensor:
    """``RMSNorm(x) * (1 + scale) + shift``.

    ``x``: [B, N, D]; ``weight``: [D]; ``shift``/``scale``: [B, S, D].
    Returns [B, N, D] in ``out_dtype`` (default: ``x``'s dtype).
    """
    norm = F.rms_norm(x.float(), weight.shape, weight.float(), eps)
    out = norm * (1 + scale.float()) + shift.float()
    return out.to(out_dtype or x.dtype)


def add_rms_norm_modulate(
        x: Tensor, gate: Tensor, update: Tensor, weight: Tensor,
        shift: Tensor, scale: Tensor, eps: float,
        out_dtype: Optional[torch.dtype] = None) -> Tuple[Tensor, Tensor]:
    """The adaLN-Zero residual then the next norm, in one pass.

    ``x_new = x + gate * update``; ``h = rms_norm_modulate(x_new, ...)``.
    ``x``, ``update``: [B, N, D]; ``gate``, ``shift``, ``scale``:
    [B, S, D]. Returns ``(x_new`` [B, N, D] in ``x``'s dtype, ``h`` in
    ``out_dtype)``.
    """
    x_new = (x.float() + gate.float() * update.float()).to(x.dtype)
    return x_new, rms_norm_modulate(x_new, weight, shift, scale, eps,
                                    out_dtype)


def swiglu(hidden: Tensor) -> Tensor:
    """``silu(a) * b`` of ``[a, b] = hidden.chunk(2, -1)``: [..., 2F] ->
    [..., F] (float32 math, ``hidden``'s dtype out)."""
    a, b = hidden.float().chunk(2, dim=-1)
    return (F.silu(a) * b).to(hidden.dtype)


def rope_qkv(qkv: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Split the qkv projection into head-major q, k, v and rotate q and k.

    ``qkv``: [B, N, 3, H, d] (the projection's output, token-major);
    ``cos``/``sin``: [N, d] tables of
    :func:`decq_plugin.models.diffusion.layers.axial_rope_tables`
    (neighbouring channels ``(2k, 2k+1)`` rotate together).
    Returns [3, B, H, N, d], contiguous, ``qkv``'s dtype.
    """
    heads = qkv.permute(2, 0, 3, 1, 4).float()
    pairs = heads[:2].unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    qk = heads[:2] * cos + rotated * sin
    return torch.cat([qk, heads[2:]]).to(qkv.dtype).contiguous()
