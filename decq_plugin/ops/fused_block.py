"""The DiT-DH block on the fused kernels of :mod:`decq_plugin.ops.fused`.

    from decq_plugin.ops.fused_block import fuse_adaln_blocks
    count = fuse_adaln_blocks(model)     # every AdaLNBlock in ``model``

:class:`FusedAdaLNBlock` has the parameters, ``state_dict`` keys and
function of :class:`~decq_plugin.models.diffusion.layers.AdaLNBlock`; only
its forward differs. Per block, three kernels replace the elementwise
work between the GEMMs::

    h = rms_norm_modulate(x, norm1, shift_a, scale_a)
    q, k, v = rope_qkv(qkv(h))                # layout + RoPE, one pass
    x, h = add_rms_norm_modulate(x, gate_a, proj(attn), norm2, shift_m,
                                 scale_m)     # residual + norm, one pass
    x = x + gate_m * w_out(swiglu(w_in(h)))

``fuse_adaln_blocks(model, ops=('add_norm', 'swiglu'))`` uses a subset
(``FUSED_OPS`` names them).

``fuse_adaln_blocks`` swaps the class of blocks in place (weights stay
where they are; ``unfuse_adaln_blocks`` swaps back), so a built or loaded
model switches without a copy.
"""
from typing import Iterable, Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from decq_plugin.models.diffusion.layers import (AdaLNBlock, attend,
                                                 gated_residual, modulate)
from . import fused


#: The kernels :class:`FusedAdaLNBlock` can use, by name.
FUSED_OPS = ('norm', 'add_norm', 'swiglu', 'rope')


class FusedAdaLNBlock(AdaLNBlock):
    """:class:`AdaLNBlock` through the fused kernels. ``x``: [B, N, D];
    ``cond``: [B, D] or [B, N, D]; RoPE tables [N, d] or None.

    ``fused_ops`` (set by :func:`fuse_adaln_blocks`) names the kernels in
    use (see ``FUSED_OPS``); the other steps run the block's own
    expressions, so a subset can be measured or kept.
    """

    fused_ops = frozenset(FUSED_OPS)
    #: a ``checkpoint`` ``context_fn`` of :mod:`decq_plugin.ops.recompute`
    #: (set by ``DiTDH(recompute_fused=...)``): in training the block runs
    #: inside a selective checkpoint, within its compiled region
    recompute_context = None

    def forward(self, x: Tensor, cond: Tensor,
                rope_cos: Optional[Tensor] = None,
                rope_sin: Optional[Tensor] = None) -> Tensor:
        context = self.recompute_context
        if context is not None and self.training and \
                torch.is_grad_enabled():
            return checkpoint(self._fused_forward, x, cond, rope_cos,
                              rope_sin, use_reentrant=False,
                              context_fn=context)
        return self._fused_forward(x, cond, rope_cos, rope_sin)

    def _fused_forward(self, x: Tensor, cond: Tensor,
                       rope_cos: Optional[Tensor],
                       rope_sin: Optional[Tensor]) -> Tensor:
        ops = self.fused_ops
        if cond.dim() == 2:
            cond = cond.unsqueeze(1)
        (shift_a, scale_a, gate_a, shift_m, scale_m,
         gate_m) = self.modulation(cond).chunk(6, dim=-1)
        if 'norm' in ops:
            h = fused.rms_norm_modulate(x, self.norm1.weight, shift_a,
                                        scale_a, self.norm1.eps)
        else:
            h = modulate(self.norm1(x), shift_a, scale_a)
        if 'rope' in ops:
            update = self._attention(h, rope_cos, rope_sin)
        else:
            update = self.attn(h, rope_cos, rope_sin)
        if 'add_norm' in ops:
            x, h = fused.add_rms_norm_modulate(x, gate_a, update,
                                               self.norm2.weight, shift_m,
                                               scale_m, self.norm2.eps)
        else:
            x = gated_residual(x, gate_a, update)
            h = modulate(self.norm2(x), shift_m, scale_m)
        mlp = self.mlp
        if 'swiglu' in ops:
            return gated_residual(x, gate_m,
                                  mlp.w_out(fused.swiglu(mlp.w_in(h))))
        return gated_residual(x, gate_m, mlp(h))

    def _attention(self, h: Tensor, cos: Optional[Tensor],
                   sin: Optional[Tensor]) -> Tensor:
        attn = self.attn
        b, n, d = h.shape
        qkv = attn.qkv(h).view(b, n, 3, attn.num_heads, attn.head_dim)
        if cos is not None:
            q, k, v = fused.rope_qkv(qkv, cos, sin).unbind(0)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = attend(q, k, v, attn.split_at, attn.sdpa_order)
        return attn.proj(out.transpose(1, 2).reshape(b, n, d))


def fuse_adaln_blocks(model: nn.Module,
                      ops: Iterable[str] = FUSED_OPS) -> int:
    """Make every :class:`AdaLNBlock` of ``model`` a
    :class:`FusedAdaLNBlock` using the kernels ``ops`` (in place); returns
    how many."""
    ops = frozenset((ops, ) if isinstance(ops, str) else ops)
    unknown = sorted(ops - set(FUSED_OPS))
    if unknown:
        raise ValueError(f'fused ops {unknown} unknown; known: '
                         f'{", ".join(FUSED_OPS)}')
    count = 0
    for module in model.modules():
        if type(module) in (AdaLNBlock, FusedAdaLNBlock):
            module.__class__ = FusedAdaLNBlock
            module.fused_ops = ops
            count += 1
    return count


def unfuse_adaln_blocks(model: nn.Module) -> int:
    """Undo :func:`fuse_adaln_blocks`; returns how many blocks changed."""
    count = 0
    for module in model.modules():
        if type(module) is FusedAdaLNBlock:
            module.__class__ = AdaLNBlock
            module.__dict__.pop('fused_ops', None)
            module.__dict__.pop('recompute_context', None)
            count += 1
    return count
