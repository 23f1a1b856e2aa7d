"""DiT-DH: a LightningDiT body with a wide DDT head, the stage-2 denoiser.

RAE mode (``num_queries=0``) denoises the patch latent [B, C, h, w]; DecQ
mode denoises the joint sequence [patch tokens ; Q query tokens] with global
self-attention. Both predict the flow-matching velocity (``noise - data``).

Data flow (``Db``: body width, ``Dh``: head width)::

    t -> Gaussian Fourier + MLP -> t_emb [B, Db];  y -> table -> y_emb
    c = SiLU(t_emb + y_emb)                                  (body condition)
    body tokens = [patch_in(x_patch) + sincos ; query_in(x_query) + qpos]
    body tokens -> body blocks (adaLN-Zero from c, RoPE on patches only)
    s = SiLU(t_emb + body tokens) -> per-type projection to Dh (per token)
    head tokens = [head_patch_in(x_patch) ; head_query_in(x_query)]
    head tokens -> head blocks (adaLN-Zero from s, RoPE on patches only)
    -> RMSNorm + adaLN(s) (no gate) -> per-type output linear -> velocity

Blocks (body and head alike): RMSNorm, adaLN-Zero, attention with qkv bias
through SDPA, SwiGLU with hidden ``int(2/3 * mlp_ratio * width)``. The
modulation of every block is ``Linear(SiLU(cond))``; like the reference
RAE code the body condition already went through a SiLU, so it passes two.
Query tokens get learnable position embeddings in the body (trunc normal
0.02) and the identity rotation everywhere; the head has no absolute
position embedding (patches: RoPE; both types: the per-token condition s).

Initialisation follows the reference: input projections xavier-uniform,
label table and timestep-MLP weights normal(0.02), adaLN modulations and
output linears zero (a fresh model predicts exactly 0), other linears keep
PyTorch's default.

Class dropout happens here, in :class:`LabelEmbedder` during training
(``class_dropout``); the null label is ``DiTDH.null_class == num_classes``.

Parameter counts (``sum(p.numel() for p in model.parameters())``,
in_channels 768, grid 16, patch 1, 1000 classes), measured with this code:

    ============ =========== =========================================
    model        this code   reference layout, frozen extras included
    ============ =========== =========================================
    S, RAE       196,357,204 196,455,764 (RAE release: ~196M)
    B, RAE       294,099,028 294,295,892 (~294M)
    XL, RAE      838,380,628 838,675,796 (~839M)
    XL, DecQ Q=8 844,785,620 (RAE XL + 6,404,992)
    ============ =========== =========================================

The reference stores the fixed sin-cos position embedding (256 x Db) and
the 256 Fourier frequencies as parameters; here they are buffers, which is
the whole difference. DecQ adds, for the queries, input projections to the
body and head widths, a condition projection to the head width, an output
linear and Q x Db position embeddings.
"""
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from decq_plugin.registry import MODELS
from ..pos_embed import sincos_2d
from ..sdpa_order import resolve_order
from .layers import (AdaLNBlock, Attention, FinalNorm, LabelEmbedder,
                     TimestepEmbedder, axial_rope_tables)

ARCH_KEYS = ('body_width', 'body_depth', 'body_heads', 'head_width',
             'head_depth', 'head_heads')

DITDH_ARCHS: Dict[str, Dict[str, int]] = {
    'S': dict(body_width=384, body_depth=12, body_heads=6,
              head_width=2048, head_depth=2, head_heads=16),
    'B': dict(body_width=768, body_depth=12, body_heads=12,
              head_width=2048, head_depth=2, head_heads=16),
    'XL': dict(body_width=1152, body_depth=28, body_heads=16,
               head_width=2048, head_depth=2, head_heads=16),
}


def _resolve_arch(arch: Union[str, dict]) -> Dict[str, int]:
    if isinstance(arch, str):
        if arch not in DITDH_ARCHS:
            raise ValueError(
                f'arch must be one of {sorted(DITDH_ARCHS)} or a dict, '
                f'got {arch!r}')
        return dict(DITDH_ARCHS[arch])
    if not isinstance(arch, dict):
        raise TypeError(f'arch must be a str or dict, got {type(arch)}')
    missing = [k for k in ARCH_KEYS if k not in arch]
    unknown = [k for k in arch if k not in ARCH_KEYS]
    if missing or unknown:
        raise ValueError(f'arch dict needs exactly the keys {ARCH_KEYS}; '
                         f'missing {missing}, unknown {unknown}')
    for k in ARCH_KEYS:
        if int(arch[k]) <= 0:
            raise ValueError(f'arch[{k!r}] must be positive, got {arch[k]}')
    return {k: int(arch[k]) for k in ARCH_KEYS}


def _projection(src: int, dst: int) -> nn.Module:
    return nn.Linear(src, dst) if src != dst else nn.Identity()


@MODELS.register_module()
class DiTDH(nn.Module):
    """DiT-DH velocity model for patch latents and optional query latents.

    Args:
        arch: 'S', 'B', 'XL' (see ``DITDH_ARCHS``) or a dict with the keys
            ``ARCH_KEYS``.
        in_channels: C of the patch latent [B, C, h, w].
        grid_size: h = w of the patch latent.
        patch_size: latent pixels per token side (tokens = (h/p)^2).
        num_queries: Q; 0 selects RAE mode (patch tokens only).
        query_channels: channels of the query latent [B, Q, Cq]; defaults to
            ``in_channels``.
        num_classes: number of classes; ``null_class = num_classes``.
        class_dropout: probability of the null label in training mode.
        mlp_ratio: SwiGLU hidden = int(2/3 * mlp_ratio * width).
        qkv_bias: bias on the qkv projection.
        use_rope: 2D axial RoPE on patch tokens (queries never rotate).
        rope_theta: RoPE base.
        grad_checkpoint: recompute blocks in backward (training only):
            True for every block, an int ``k`` for the first ``k`` body
            blocks only (trades part of the recompute for the activation
            memory that buys a larger batch), False/0 for none.
        fused_kernels: the Triton kernels of ``decq_plugin.ops`` the blocks
            use: True (all, the default: 2.7% faster DiT-DH-XL train step
            on an H200, docs/benchmarks.md), False (none: the blocks' own
            expressions, which ``torch.compile`` fuses) or names from
            ``decq_plugin.ops.fused_block.FUSED_OPS``. Parameters,
            checkpoints and values (to rounding) are the same either way;
            on a CPU the kernels compute the reference expressions.
        recompute_fused: outputs of the fused kernels that the backward
            recomputes instead of storing (``decq_plugin.ops.recompute``):
            True for ``('norm', 'swiglu')``, names from its
            ``RECOMPUTABLE``, or False (store all, the default). Less
            activation memory for a few memory-bound kernels more; blocks
            under ``grad_checkpoint`` recompute everything anyway.
        attention_backends: the order in which the attention tries SDPA's
            kernels (:func:`decq_plugin.models.sdpa_order.resolve_order`):
            True (cuDNN first, the default: at DecQ mode's 264 tokens
            PyTorch's own order picks the slower flash kernels), a name to
            put first, a sequence of names, or None for PyTorch's order.
            Values are the same to rounding; a kernel that cannot take a
            call falls through to the next.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'XL',
                 in_channels: int = 768,
                 grid_size: int = 16,
                 patch_size: int = 1,
                 num_queries: int = 0,
                 query_channels: Optional[int] = None,
                 num_classes: int = 1000,
                 class_dropout: float = 0.1,
                 mlp_ratio: float = 4.0,
                 qkv_bias: bool = True,
                 use_rope: bool = True,
                 rope_theta: float = 10000.0,
                 grad_checkpoint: Union[bool, int] = False,
                 fused_kernels: Union[bool, Sequence[str]] = True,
                 recompute_fused: Union[bool, Sequence[str]] = False,
                 attention_backends: Union[None, bool, str,
                                           Sequence[str]] = True
                 ) -> None:
        super().__init__()
        cfg = _resolve_arch(arch)
        if in_channels <= 0:
            raise ValueError(
                f'in_channels must be positive, got {in_channels}')
        if patch_size <= 0 or grid_size <= 0 or grid_size % patch_size:
            raise ValueError(f'grid_size ({grid_size}) must be a positive '
                             f'multiple of patch_size ({patch_size})')
        if num_queries < 0:
            raise ValueError(f'num_queries must be >= 0, got {num_queries}')
        if query_channels is None:
            query_channels = in_channels
        if query_channels <= 0:
            raise ValueError(
                f'query_channels must be positive, got {query_channels}')
        if mlp_ratio <= 0:
            raise ValueError(f'mlp_ratio must be positive, got {mlp_ratio}')
        for part in ('body', 'head'):
            width, heads = cfg[f'{part}_width'], cfg[f'{part}_heads']
            if width % heads or (width // heads) % 4:
                raise ValueError(
                    f'{part}_width ({width}) / {part}_heads ({heads}) must be '
                    f'an integer head dim divisible by 4')

        self.arch = cfg
        self.in_channels = in_channels
        self.grid_size = grid_size
        self.patch_size = patch_size
        self.num_queries = num_queries
        self.query_channels = query_channels
        self.num_classes = num_classes
        self.null_class = num_classes
        total_blocks = cfg['body_depth'] + cfg['head_depth']
        if isinstance(grad_checkpoint, bool):
            n_ckpt = total_blocks if grad_checkpoint else 0
        elif isinstance(grad_checkpoint, int) and \
                0 <= grad_checkpoint <= cfg['body_depth']:
            n_ckpt = grad_checkpoint
        else:
            raise ValueError(f'grad_checkpoint must be a bool or an int in '
                             f"[0, {cfg['body_depth']}], got "
                             f'{grad_checkpoint!r}')
        self.grad_checkpoint = grad_checkpoint
        #: blocks 0 .. n-1 (body first, then head) are recomputed.
        self.num_checkpointed = n_ckpt
        self.token_grid = grid_size // patch_size
        self.num_patches = self.token_grid ** 2
        token_dim = in_channels * patch_size ** 2
        body_w, head_w = cfg['body_width'], cfg['head_width']

        # Conditioning.
        self.t_embedder = TimestepEmbedder(body_w)
        self.y_embedder = LabelEmbedder(num_classes, body_w, class_dropout)

        # Body.
        self.patch_in = nn.Linear(token_dim, body_w)
        self.register_buffer(
            'pos_embed',
            sincos_2d(body_w, self.token_grid, self.token_grid)[None],
            persistent=False)
        self.body_blocks = nn.ModuleList([
            AdaLNBlock(body_w, cfg['body_heads'], mlp_ratio, qkv_bias)
            for _ in range(cfg['body_depth'])
        ])
        self.patch_cond = _projection(body_w, head_w)

        # Head.
        self.head_patch_in = nn.Linear(token_dim, head_w)
        self.head_blocks = nn.ModuleList([
            AdaLNBlock(head_w, cfg['head_heads'], mlp_ratio, qkv_bias)
            for _ in range(cfg['head_depth'])
        ])
        self.final_norm = FinalNorm(head_w)
        self.patch_out = nn.Linear(head_w, token_dim)

        # Query tokens (DecQ mode).
        if num_queries > 0:
            self.query_in = nn.Linear(query_channels, body_w)
            self.query_pos_embed = nn.Parameter(
                torch.zeros(1, num_queries, body_w))
            self.query_cond = _projection(body_w, head_w)
            self.head_query_in = nn.Linear(query_channels, head_w)
            self.query_out = nn.Linear(head_w, query_channels)

        # Rotary tables: patches rotate with their (row, col), queries not.
        self.use_rope = use_rope
        if use_rope:
            for part, width in (('body', body_w), ('head', head_w)):
                cos, sin = axial_rope_tables(
                    width // cfg[f'{part}_heads'], self.token_grid,
                    num_queries, rope_theta)
                self.register_buffer(f'{part}_rope_cos', cos, persistent=False)
                self.register_buffer(f'{part}_rope_sin', sin, persistent=False)
        self._reset_parameters()
        self.attention_backends = resolve_order(attention_backends)
        for module in self.modules():
            if isinstance(module, Attention):
                module.sdpa_order = self.attention_backends
        self.fused_kernels = fused_kernels
        fused_ops = ()
        if fused_kernels:
            from decq_plugin.ops.fused_block import (FUSED_OPS,
                                                     fuse_adaln_blocks)
            fused_ops = FUSED_OPS if fused_kernels is True else fused_kernels
            fuse_adaln_blocks(self, fused_ops)
        from decq_plugin.ops.recompute import (resolve_names,
                                               selective_recompute)
        self.recompute_fused = resolve_names(recompute_fused, fused_ops)
        context = selective_recompute(self.recompute_fused)
        if context is not None:  # blocks under grad_checkpoint: all anyway
            blocks = [*self.body_blocks, *self.head_blocks]
            for block in blocks[n_ckpt:]:
                block.recompute_context = context

    def _reset_parameters(self) -> None:
        in_projs = [self.patch_in, self.head_patch_in]
        out_projs = [self.patch_out]
        if self.num_queries > 0:
            in_projs += [self.query_in, self.head_query_in]
            out_projs.append(self.query_out)
            nn.init.trunc_normal_(self.query_pos_embed, std=0.02)
        for layer in in_projs:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.y_embedder.table.weight, std=0.02)
        for i in (0, 2):
            nn.init.normal_(self.t_embedder.mlp[i].weight, std=0.02)
            nn.init.zeros_(self.t_embedder.mlp[i].bias)
        zero = [b.modulation[-1] for b in self.body_blocks]
        zero += [b.modulation[-1] for b in self.head_blocks]
        zero += [self.final_norm.modulation[-1]] + out_projs
        for layer in zero:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # ------------------------------------------------------------------ utils
    def patchify(self, x: Tensor) -> Tensor:
        """[B, C, h, w] -> [B, (h/p)*(w/p), C*p*p] (row-major tokens)."""
        return rearrange(x, 'b c (h p1) (w p2) -> b (h w) (c p1 p2)',
                         h=self.token_grid, w=self.token_grid)

    def unpatchify(self, x: Tensor) -> Tensor:
        """[B, (h/p)*(w/p), C*p*p] -> [B, C, h, w]."""
        p = self.patch_size
        return rearrange(x, 'b (h w) (c p1 p2) -> b c (h p1) (w p2)',
                         h=self.token_grid, p1=p, p2=p)

    def _rope(self, part: str) -> tuple:
        if not self.use_rope:
            return None, None
        return (getattr(self, f'{part}_rope_cos'),
                getattr(self, f'{part}_rope_sin'))

    def _run_block(self, index: int, block: nn.Module, x: Tensor,
                   cond: Tensor, cos: Optional[Tensor],
                   sin: Optional[Tensor]) -> Tensor:
        if (index < self.num_checkpointed and self.training
                and torch.is_grad_enabled()):
            return checkpoint(block, x, cond, cos, sin, use_reentrant=False)
        return block(x, cond, cos, sin)

    def _check_inputs(self, x: Dict[str, Tensor]) -> None:
        patch = x['patch']
        want = (self.in_channels, self.grid_size, self.grid_size)
        if patch.dim() != 4 or tuple(patch.shape[1:]) != want:
            raise ValueError(f"x['patch'] must be [B, {want[0]}, {want[1]}, "
                             f'{want[2]}], got {tuple(patch.shape)}')
        if self.num_queries > 0:
            if 'query' not in x:
                raise ValueError(f"x['query'] is required: the model was "
                                 f'built with num_queries={self.num_queries}')
            want_q = (patch.shape[0], self.num_queries, self.query_channels)
            if tuple(x['query'].shape) != want_q:
                raise ValueError(f"x['query'] must be {list(want_q)}, got "
                                 f"{list(x['query'].shape)}")
        elif 'query' in x:
            raise ValueError("x has 'query' but the model was built with "
                             'num_queries=0 (RAE mode)')

    # ---------------------------------------------------------------- forward
    def forward(self, x: Dict[str, Tensor], t: Tensor,
                y: Tensor) -> Dict[str, Tensor]:
        """Predict the velocity of the noisy latents.

        Args:
            x: ``{'patch': [B, C, h, w], 'query': [B, Q, Cq]}`` ('query' only
                in DecQ mode).
            t: [B] (or a scalar) flow time in [0, 1], 1 = pure noise.
            y: [B] long class labels; ``null_class`` for unconditional.

        Returns:
            Velocity predictions with the keys and shapes of ``x``.
        """
        self._check_inputs(x)
        patch_tokens = self.patchify(x['patch'])
        batch, n = patch_tokens.shape[0], self.num_patches
        if t.dim() == 0:
            t = t.expand(batch)
        t_emb = self.t_embedder(t)
        cond = F.silu(t_emb + self.y_embedder(y))

        # Body.
        h = self.patch_in(patch_tokens) + self.pos_embed
        if self.num_queries > 0:
            q = self.query_in(x['query']) + self.query_pos_embed
            h = torch.cat([h, q], dim=1)
        cos, sin = self._rope('body')
        for i, block in enumerate(self.body_blocks):
            h = self._run_block(i, block, h, cond, cos, sin)
        s = F.silu(t_emb.unsqueeze(1) + h)
        if self.num_queries > 0:
            s = torch.cat([self.patch_cond(s[:, :n]),
                           self.query_cond(s[:, n:])], dim=1)
        else:
            s = self.patch_cond(s)

        # Head.
        z = self.head_patch_in(patch_tokens)
        if self.num_queries > 0:
            z = torch.cat([z, self.head_query_in(x['query'])], dim=1)
        cos, sin = self._rope('head')
        depth = len(self.body_blocks)
        for i, block in enumerate(self.head_blocks):
            z = self._run_block(depth + i, block, z, s, cos, sin)
        z = self.final_norm(z, s)

        out = {'patch': self.unpatchify(self.patch_out(z[:, :n]))}
        if self.num_queries > 0:
            out['query'] = self.query_out(z[:, n:])
        return out
