"""ViT pixel decoder: latent tokens -> image, at B / L / XL sizes.

As RAE's decoder: patch latents ``[B,C,h,w]`` get a linear in-projection and
a fixed 2D sin-cos position embedding, and a learned CLS token (position
code zero) is put in front, so ``1 + h*w`` tokens run through the pre-LN
transformer blocks (LayerNorm eps 1e-12). DecQ query latents ``[B,Q,Cq]``
get their own linear in-projection and learnable position embeddings and
are appended. Only the patch positions predict pixels (final LN, linear to
``p*p*3``, unpatchify); the prediction is in ImageNet-normalised units and
mapped back to [0, 1] pixels with the ImageNet mean/std.

``cls_token=False, out_mean=None, out_std=None`` give the earlier form of
this decoder (no CLS token, [0, 1] pixels predicted directly), which
checkpoints written before the change need.
"""
from typing import Dict, Optional, Sequence, Union

import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from decq_plugin.registry import MODELS
from ..encoders.base import IMAGENET_MEAN, IMAGENET_STD
from ..pos_embed import sincos_2d
from ..transformer_layers import TransformerBlock

#: width / depth / heads / MLP hidden size of the decoder presets.
DECODER_PRESETS: Dict[str, Dict[str, int]] = {
    'B': dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
    'L': dict(width=1024, depth=24, num_heads=16, mlp_dim=4096),
    'XL': dict(width=1152, depth=28, num_heads=16, mlp_dim=4096),
}


@MODELS.register_module()
class ViTPixelDecoder(nn.Module):
    """Decode patch (and query) latents into pixels.

    Args:
        arch: a key of :data:`DECODER_PRESETS` or a dict with ``width``,
            ``depth``, ``num_heads``, ``mlp_dim``.
        in_channels: channels C of the patch latents.
        grid_size: side h = w of the patch grid.
        patch_size: pixels per latent patch side (output side =
            ``grid_size * patch_size``).
        num_queries: Q query tokens decoded jointly (0: patches only).
        query_channels: channels of the query latents (default
            ``in_channels``).
        out_channels: image channels.
        qkv_bias: bias on the attention's q / kv projections.
        norm_eps: LayerNorm epsilon (RAE: 1e-12).
        cls_token: prepend a learned CLS token (RAE: yes).
        out_mean, out_std: per-channel statistics of the predicted pixels:
            the output is ``prediction * out_std + out_mean`` (RAE: the
            ImageNet ones); both None: the prediction is the image.
        grad_checkpointing: recompute block activations in backward.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'XL',
                 in_channels: int = 768,
                 grid_size: int = 16,
                 patch_size: int = 16,
                 num_queries: int = 0,
                 query_channels: Optional[int] = None,
                 out_channels: int = 3,
                 qkv_bias: bool = True,
                 norm_eps: float = 1e-12,
                 cls_token: bool = True,
                 out_mean: Optional[Sequence[float]] = IMAGENET_MEAN,
                 out_std: Optional[Sequence[float]] = IMAGENET_STD,
                 grad_checkpointing: bool = False) -> None:
        super().__init__()
        if isinstance(arch, str):
            if arch not in DECODER_PRESETS:
                raise ValueError(f"arch='{arch}' is not one of "
                                 f'{sorted(DECODER_PRESETS)} nor a dict')
            arch = DECODER_PRESETS[arch]
        allowed = {'width', 'depth', 'num_heads', 'mlp_dim'}
        missing = allowed - set(arch)
        if missing:
            raise ValueError(f'arch dict lacks {sorted(missing)}')
        unknown = set(arch) - allowed
        if unknown:
            raise ValueError(
                f'arch dict has unknown keys {sorted(unknown)} (allowed: '
                f'{sorted(allowed)}); check the spelling of the decoder\'s '
                'arch in the config (e.g. model.tokenizer.decoder.arch)')
        if num_queries < 0:
            raise ValueError(f'num_queries={num_queries} must be >= 0')
        if (out_mean is None) != (out_std is None):
            raise ValueError('out_mean and out_std must both be given or '
                             f'both be None, got {out_mean} and {out_std}')
        if out_mean is not None and not (
                len(out_mean) == len(out_std) == out_channels
                and min(out_std) > 0):
            raise ValueError(f'out_mean / out_std need {out_channels} values '
                             f'(std > 0), got {out_mean} and {out_std}')
        width = arch['width']
        self.arch = dict(arch)
        self.grid_size = grid_size
        self.patch_size = patch_size
        self.out_channels = out_channels
        self.num_queries = num_queries
        self.grad_checkpointing = grad_checkpointing

        self.patch_in = nn.Linear(in_channels, width)
        self.register_buffer(
            'patch_pos', sincos_2d(width, grid_size, grid_size)[None],
            persistent=False)
        self.cls_token = (nn.Parameter(torch.zeros(1, 1, width))
                          if cls_token else None)
        if out_mean is not None:
            for name, value in (('out_mean', out_mean), ('out_std', out_std)):
                self.register_buffer(
                    name, torch.tensor(value, dtype=torch.float32).view(
                        1, -1, 1, 1), persistent=False)
        else:
            self.out_mean = self.out_std = None
        if num_queries:
            self.query_in = nn.Linear(query_channels or in_channels, width)
            self.query_pos = nn.Parameter(torch.zeros(1, num_queries, width))
        self.blocks = nn.ModuleList(
            TransformerBlock(width, arch['num_heads'], arch['mlp_dim'],
                             qkv_bias, norm_eps)
            for _ in range(arch['depth']))
        self.norm = nn.LayerNorm(width, eps=norm_eps)
        self.head = nn.Linear(width, patch_size * patch_size * out_channels)
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        if self.num_queries:
            nn.init.trunc_normal_(self.query_pos, std=0.02)

    @property
    def last_layer(self) -> torch.Tensor:
        """Weight of the pixel head (for the adaptive GAN weight)."""
        return self.head.weight

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, h*w, p*p*c]`` -> ``[B, c, h*p, w*p]``."""
        return rearrange(x, 'b (h w) (p1 p2 c) -> b c (h p1) (w p2)',
                         h=self.grid_size, p1=self.patch_size,
                         p2=self.patch_size, c=self.out_channels)

    def forward(self,
                patch: torch.Tensor,
                query: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``patch [B,C,h,w]``, ``query [B,Q,Cq]`` -> image ``[B,3,H,W]``
        (unclamped; [0,1] is the target range)."""
        if patch.shape[-1] != self.grid_size or patch.shape[-2] != \
                self.grid_size:
            raise ValueError(f'patch latents must be [B, C, {self.grid_size}, '
                             f'{self.grid_size}], got {tuple(patch.shape)}')
        if (query is None) != (self.num_queries == 0) or (
                query is not None and query.shape[1] != self.num_queries):
            raise ValueError(
                f'this decoder expects {self.num_queries} query tokens, got '
                f'{"none" if query is None else tuple(query.shape)}')
        x = self.patch_in(rearrange(patch, 'b c h w -> b (h w) c'))
        x = x + self.patch_pos
        first, n = 0, x.shape[1]
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
            first = 1
        if query is not None:
            q = self.query_in(query) + self.query_pos
            x = torch.cat([x, q], dim=1)
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = self.unpatchify(self.head(self.norm(x[:, first:first + n])))
        if self.out_mean is not None:
            x = x * self.out_std.to(x.dtype) + self.out_mean.to(x.dtype)
        return x
