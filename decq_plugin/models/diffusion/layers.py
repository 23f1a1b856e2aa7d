"""Building blocks of DiT-DH: norms, SwiGLU, 2D axial RoPE, adaLN blocks and
the timestep / class-label embedders (the 2-D sin-cos table lives in
:mod:`decq_plugin.models.pos_embed`).

Shapes: ``B`` batch, ``N`` tokens, ``D`` width, ``H`` heads, ``d`` head dim.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..sdpa_order import sdpa_order


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation ``x * (1 + scale) + shift``.

    ``x``: [B, N, D]; ``shift``/``scale``: [B, 1, D] (one condition per
    sample) or [B, N, D] (one condition per token). One fused multiply-add
    over ``x`` (``addcmul``) instead of a multiply and an add.
    """
    return torch.addcmul(shift, x, 1 + scale)


def gated_residual(x: Tensor, gate: Tensor, update: Tensor) -> Tensor:
    """adaLN-Zero residual ``x + gate * update`` as one ``addcmul``.

    ``x``, ``update``: [B, N, D]; ``gate``: [B, 1, D] or [B, N, D].
    """
    return torch.addcmul(x, gate, update)


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learnable gain, computed in float32.

    [..., D] -> [..., D] (same dtype as the input). One ``F.rms_norm`` call
    (a fused kernel on CUDA) instead of five elementwise passes.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f'dim must be positive, got {dim}')
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x.float(), self.weight.shape, self.weight.float(),
                          self.eps).to(x.dtype)


class SwiGLU(nn.Module):
    """Gated MLP ``w_out(silu(a) * b)`` with ``[a, b] = w_in(x)``.

    [..., D] -> [..., D]; ``hidden`` is the width of ``a`` (and of ``b``).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        if hidden <= 0:
            raise ValueError(f'hidden must be positive, got {hidden}')
        self.w_in = nn.Linear(dim, 2 * hidden)
        self.w_out = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.w_in(x).chunk(2, dim=-1)
        return self.w_out(F.silu(a) * b)


def axial_rope_tables(head_dim: int, grid: int, num_extra: int = 0,
                      theta: float = 10000.0) -> tuple:
    """Cosine/sine tables of 2D axial RoPE, each [grid*grid + num_extra, d].

    Layout of EVA / LightningDiT / RAE: the first half of a head's channels
    rotates with the token's row, the second half with its column; within
    each half the neighbouring channels ``(2k, 2k + 1)`` form a rotated pair
    at frequency ``theta ** (-k / (d/4))``. The ``num_extra`` tokens
    appended after the grid (query tokens) get the identity rotation
    (cos 1, sin 0).
    """
    if head_dim % 4 != 0:
        raise ValueError(
            f'head_dim must be divisible by 4 for 2D RoPE, got {head_dim}')
    quarter = head_dim // 4
    freqs = theta ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    pos = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing='ij')
    row_angle = (rows.reshape(-1, 1) * freqs).repeat_interleave(2, dim=1)
    col_angle = (cols.reshape(-1, 1) * freqs).repeat_interleave(2, dim=1)
    angle = torch.cat([row_angle, col_angle], dim=1)
    extra = torch.zeros(num_extra, head_dim, dtype=torch.float64)
    angle = torch.cat([angle, extra], dim=0)
    return angle.cos().float(), angle.sin().float()


def rotate_pairs(x: Tensor) -> Tensor:
    """The 90-degree partner of :func:`apply_rope`: [..., d] -> [..., d].

    Each neighbouring pair ``(x[2k], x[2k+1])`` becomes
    ``(-x[2k+1], x[2k])``.
    """
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate queries or keys [B, H, N, d] by tables [N, d] (float32 math)."""
    xf = x.float()
    return (xf * cos + rotate_pairs(xf) * sin).to(x.dtype)


def attend(q: Tensor, k: Tensor, v: Tensor, split_at: int = 0,
           order: Optional[Sequence[str]] = None) -> Tensor:
    """Softmax attention of q, k, v [B, H, N, d] -> [B, H, N, d].

    ``split_at`` > 0 (and < N) runs the queries of tokens ``[:split_at]``
    and ``[split_at:]`` as two SDPA calls over all N keys: the same values,
    but the first call's query length stays a multiple of the kernels'
    tiles (DecQ's 256 patches + 8 queries would otherwise pad 264 to the
    next tile).

    ``order``: SDPA backends to try, in order (resolved names of
    :mod:`decq_plugin.models.sdpa_order`); None keeps PyTorch's order.
    """
    with sdpa_order(order):
        if 0 < split_at < q.shape[2]:
            return torch.cat([
                F.scaled_dot_product_attention(q[:, :, :split_at], k, v),
                F.scaled_dot_product_attention(q[:, :, split_at:], k, v)],
                dim=2)
        return F.scaled_dot_product_attention(q, k, v)


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``
    with optional RoPE on queries and keys. [B, N, D] -> [B, N, D].

    ``token_major`` (class attribute) picks the layout handed to SDPA:
    False permutes q/k/v into head-major [B, H, N, d] tensors; True keeps
    the token-major [B, N, H, d] storage of the qkv projection and passes
    [B, H, N, d] views of it (no transposes around the kernel). Both give
    the same values.

    ``split_at`` (instance attribute, 0: off) splits the queries into two
    SDPA calls at that token (see :func:`attend`).

    ``sdpa_order`` (instance attribute, None: PyTorch's order) is the
    order in which SDPA backends are tried (see :func:`attend`); DiT-DH
    sets it from its ``attention_backends``.
    """

    token_major = False
    split_at = 0
    sdpa_order = None

    def __init__(self, dim: int, num_heads: int,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(
                f'width {dim} must be divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope_cos: Optional[Tensor] = None,
                rope_sin: Optional[Tensor] = None) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
        if self.token_major:
            q, k, v = self._token_major_qkv(qkv, rope_cos, rope_sin)
            # No mask and head dims of 8k: SDPA takes the cuDNN/flash kernels.
            x = attend(q, k, v, self.split_at, self.sdpa_order)
            return self.proj(x.transpose(1, 2).reshape(b, n, d))
        qkv = qkv.permute(2, 0, 3, 1, 4)  # [3, B, H, N, d]
        if rope_cos is not None:
            # Queries and keys rotate in one pass: [2, B, H, N, d].
            q, k = apply_rope(qkv[:2], rope_cos, rope_sin).unbind(0)
            v = qkv[2]
        else:
            q, k, v = qkv.unbind(0)
        x = attend(q, k, v, self.split_at, self.sdpa_order)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))

    @staticmethod
    def _token_major_qkv(qkv: Tensor, cos: Optional[Tensor],
                         sin: Optional[Tensor]) -> tuple:
        """[B, N, 3, H, d] -> q, k, v as [B, H, N, d] views of token-major
        storage; RoPE tables [N, d] rotate q and k in one pass."""
        if cos is not None:
            qk = apply_rope(qkv[:, :, :2], cos[:, None, None],
                            sin[:, None, None])  # [B, N, 2, H, d]
            q, k = qk.unbind(2)
        else:
            q, k = qkv[:, :, 0], qkv[:, :, 1]
        v = qkv[:, :, 2]
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


class AdaLNBlock(nn.Module):
    """Transformer block with RMSNorm, adaLN-Zero (shift, scale, gate for the
    attention and the MLP), SwiGLU MLP and RoPE attention.

    ``x``: [B, N, D]; ``cond``: [B, D] (per sample) or [B, N, D] (per
    token). The modulation is ``Linear(SiLU(cond))`` and starts at zero, so
    a fresh block is the identity.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, int(2 / 3 * mlp_ratio * dim))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, cond: Tensor,
                rope_cos: Optional[Tensor] = None,
                rope_sin: Optional[Tensor] = None) -> Tensor:
        if cond.dim() == 2:
            cond = cond.unsqueeze(1)
        (shift_a, scale_a, gate_a, shift_m, scale_m,
         gate_m) = self.modulation(cond).chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift_a, scale_a)
        x = gated_residual(x, gate_a, self.attn(h, rope_cos, rope_sin))
        h = modulate(self.norm2(x), shift_m, scale_m)
        return gated_residual(x, gate_m, self.mlp(h))


class FinalNorm(nn.Module):
    """Final RMSNorm with adaLN shift/scale (no gate), per-token condition.

    ``x``, ``cond``: [B, N, D] -> [B, N, D]. The output linears live in the
    model (one per token type).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        shift, scale = self.modulation(cond).chunk(2, dim=-1)
        return modulate(self.norm(x), shift, scale)


class TimestepEmbedder(nn.Module):
    """Gaussian Fourier features of ``t`` followed by an MLP.

    ``t``: [B] float in [0, 1] -> [B, D]. The random frequencies (std
    ``scale``) are a fixed, saved buffer; features are
    ``[sin(2 pi f t), cos(2 pi f t)]``.
    """

    def __init__(self, dim: int, num_freqs: int = 256,
                 scale: float = 1.0) -> None:
        super().__init__()
        if num_freqs <= 0:
            raise ValueError(f'num_freqs must be positive, got {num_freqs}')
        self.register_buffer('freqs', torch.randn(num_freqs) * scale)
        self.mlp = nn.Sequential(
            nn.Linear(2 * num_freqs, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        angle = 2 * math.pi * t.float()[:, None] * self.freqs.float()[None]
        feats = torch.cat([angle.sin(), angle.cos()], dim=-1)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class embedding table with a null class at index ``num_classes``.

    ``y``: [B] long -> [B, D]. In training mode each label is replaced by
    the null class with probability ``dropout`` (for classifier-free
    guidance); in eval mode labels pass unchanged. Callers may pass the
    null class themselves for unconditional predictions.
    """

    def __init__(self, num_classes: int, dim: int, dropout: float) -> None:
        super().__init__()
        if num_classes <= 0:
            raise ValueError(
                f'num_classes must be positive, got {num_classes}')
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'class_dropout must be in [0, 1), got {dropout}')
        self.null_class = num_classes
        self.dropout = dropout
        self.table = nn.Embedding(num_classes + 1, dim)

    def drop_labels(self, y: Tensor) -> Tensor:
        """Replace each label by the null class with prob. ``dropout``."""
        drop = torch.rand(y.shape, device=y.device) < self.dropout
        return torch.where(drop, torch.full_like(y, self.null_class), y)

    def forward(self, y: Tensor) -> Tensor:
        if self.training and self.dropout > 0:
            y = self.drop_labels(y)
        return self.table(y)
