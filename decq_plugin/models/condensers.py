"""Condensers: learnable queries that read intermediate VFM tokens.

A :class:`QueryCondenser` owns Q learnable query vectors and one
:class:`CondenserBlock` per tapped VFM block. Inside
``with condenser.condense(encoder, batch_size):`` a forward hook sits on each
tapped block of the :class:`VFMEncoder` (the VFM itself is not edited, and
the hooks are removed on exit, so copies and checkpoints of the VFM never
carry them). Every hooked block hands its tokens to its condenser block:
queries cross-attend to them (pre-norm, residual) and pass an FFN (pre-norm,
residual). Blocks run in depth order, so the queries pass the condensers in
depth order. The hooks return nothing and only read detached tokens, so the
VFM's own tokens are bit-identical with and without condensers and no
gradient reaches the VFM.
"""
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from decq_plugin.registry import MODELS
from .encoders.base import VFMEncoder, check_block_indices
from .transformer_layers import Attention, Mlp


class CondenserBlock(nn.Module):
    """Queries ``[B,Q,D]`` + block tokens ``[B,N,D]`` -> queries ``[B,Q,D]``.

    ``q = q + CrossAttn(LN(q), LN(tokens)); q = q + FFN(LN(q))``.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 mlp_ratio: float = 4.0,
                 qkv_bias: bool = True,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim, eps=norm_eps)
        self.norm_kv = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm_mlp = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, queries: torch.Tensor,
                tokens: torch.Tensor) -> torch.Tensor:
        queries = queries + self.attn(
            self.norm_q(queries), self.norm_kv(tokens))
        return queries + self.mlp(self.norm_mlp(queries))


@MODELS.register_module()
class QueryCondenser(nn.Module):
    """Learnable detail-condensing queries and their condenser blocks.

    Args:
        num_queries: Q, number of query tokens.
        embed_dim: D, the VFM width (queries have the same width).
        layers: 0-indexed VFM blocks to tap (DecQ default 0, 3, 6, 9).
        num_heads: heads of the cross-attention.
        mlp_ratio: FFN hidden size / D.
        tap: ``'output'`` reads a block's output (default), ``'input'`` its
            input (which puts the patch embedding in reach at layer 0).
        kv_tokens: ``'patch'`` uses the block's patch tokens as keys/values
            (default), ``'all'`` includes the prefix (CLS/register) tokens.
        final_norm: apply the VFM's affine-free LayerNorm to the final
            queries so both latents share one scale.
        init_std: std of the truncated-normal query initialisation.
    """

    def __init__(self,
                 num_queries: int = 8,
                 embed_dim: int = 768,
                 layers: Sequence[int] = (0, 3, 6, 9),
                 num_heads: int = 12,
                 mlp_ratio: float = 4.0,
                 tap: str = 'output',
                 kv_tokens: str = 'patch',
                 final_norm: bool = True,
                 qkv_bias: bool = True,
                 init_std: float = 0.02,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        if num_queries < 1:
            raise ValueError(f'num_queries={num_queries} must be >= 1')
        if not layers:
            raise ValueError('layers must name at least one VFM block')
        if tap not in ('output', 'input'):
            raise ValueError(f"tap='{tap}' must be 'output' or 'input'")
        if kv_tokens not in ('patch', 'all'):
            raise ValueError(f"kv_tokens='{kv_tokens}' must be 'patch' or "
                             "'all'")
        self.num_queries = num_queries
        self.embed_dim = embed_dim
        self.layers = sorted(int(i) for i in layers)
        self.tap = tap
        self.kv_tokens = kv_tokens
        self.final_norm = final_norm
        self.norm_eps = norm_eps
        self.queries = nn.Parameter(torch.empty(num_queries, embed_dim))
        nn.init.trunc_normal_(self.queries, std=init_std)
        self.blocks = nn.ModuleList(
            CondenserBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, norm_eps)
            for _ in self.layers)
        self._handles: List[RemovableHandle] = []
        self._num_prefix = 0
        self._state: Optional[torch.Tensor] = None
        self._grad = True

    # -- attaching -----------------------------------------------------------
    def check_encoder(self, encoder: VFMEncoder) -> List[int]:
        """Check ``embed_dim`` and ``layers`` against ``encoder``; return
        the tapped block indices, non-negative, in depth order."""
        if encoder.embed_dim != self.embed_dim:
            raise ValueError(f'embed_dim={self.embed_dim} does not match the '
                             f'VFM width {encoder.embed_dim}')
        return check_block_indices(self.layers, encoder.num_blocks)

    def attach(self, encoder: VFMEncoder) -> None:
        """Register one forward hook per tapped block of ``encoder``."""
        if self._handles:
            raise RuntimeError('this QueryCondenser is already attached')
        layers = self.check_encoder(encoder)
        self._num_prefix = encoder.num_prefix_tokens
        for idx, layer in enumerate(layers):
            block = encoder.blocks[layer]
            if self.tap == 'output':
                handle = block.register_forward_hook(self._output_hook(idx))
            else:
                handle = block.register_forward_pre_hook(
                    self._input_hook(idx))
            self._handles.append(handle)

    def detach(self) -> None:
        """Remove the hooks; the VFM is exactly as before."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def _output_hook(self, idx: int):

        def hook(module: nn.Module, args: tuple, output: torch.Tensor):
            self._update(idx, output)

        return hook

    def _input_hook(self, idx: int):

        def hook(module: nn.Module, args: tuple):
            self._update(idx, args[0])

        return hook

    def _update(self, idx: int, tokens: torch.Tensor) -> None:
        if self._state is None:  # the VFM runs on its own
            return
        if self.kv_tokens == 'patch':
            tokens = tokens[:, self._num_prefix:]
        # The frozen VFM runs under no_grad; the condenser records a graph
        # only when its caller (outside the VFM) does.
        with torch.set_grad_enabled(self._grad):
            self._state = self.blocks[idx](self._state, tokens.detach())

    # -- running ---------------------------------------------------------------
    @contextmanager
    def condense(self, encoder: VFMEncoder,
                 batch_size: int) -> Iterator['QueryCondenser']:
        """Hook onto ``encoder`` for one forward pass of ``batch_size``
        images; read the queries with :meth:`result` inside the block.

        Example::

            with condenser.condense(encoder, images.shape[0]):
                patches = encoder(images)        # [B, N, D], unchanged
                queries = condenser.result()     # [B, Q, D]
        """
        newly_attached = not self._handles
        if newly_attached:
            self.attach(encoder)
        self._grad = torch.is_grad_enabled()
        self._state = self.queries.unsqueeze(0).expand(batch_size, -1, -1)
        try:
            yield self
        finally:
            self._state = None
            if newly_attached:
                self.detach()

    def result(self) -> torch.Tensor:
        """The condensed queries ``[B, Q, D]`` of the current pass."""
        if self._state is None:
            raise RuntimeError('result() is only valid inside condense()')
        q = self._state
        if self.final_norm:
            q = F.layer_norm(q, (q.shape[-1], ), eps=self.norm_eps)
        return q
