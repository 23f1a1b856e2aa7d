"""Key layouts of diffusers' ``AutoencoderRAE`` (the format RAE's Hub
weights, ``nyu-visionx/RAE-*``, are published in) and the maps between them
and this package's modules.

A folder holds ``config.json`` and ``diffusion_pytorch_model.safetensors``:

* ``encoder.*``: transformers' DINOv2-with-registers model
  (``embeddings.{cls_token, mask_token, register_tokens,
  position_embeddings, patch_embeddings.projection}``,
  ``encoder.layer.{i}.{norm1, attention.{q,k,v,o}_proj, layer_scale1.lambda1,
  norm2, mlp.fc1, mlp.fc2, layer_scale2.lambda1}``; transformers 4 named the
  attention ``attention.attention.{query,key,value}`` /
  ``attention.output.dense``). Its position table is always that of 518 px
  (``image_size`` of the encoder config) with a CLS row, resampled at run
  time (bicubic, anti-aliased, float32) to the input grid.
* ``decoder.*``: RAE's ``GeneralDecoder`` with diffusers attention names
  (``attention.to_{q,k,v}``, ``attention.to_out.0``); the fixed sin-cos
  table is not stored.
* ``_latents_mean`` / ``_latents_std``, ``encoder_mean`` / ``encoder_std``.

Latents are normalised as ``(z - mean) / (std + 1e-5) * scaling_factor``;
this package normalises as ``(z - mean) / sqrt(var + eps)``: the maps
below convert one into the other exactly.

The timm layout here is that of ``vit_base_patch14_reg4_dinov2`` at the
encoder's input size: the CLS position folded into ``cls_token``,
registers without positions, ``pos_embed`` of the patches only.
"""
import re
from typing import Dict, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .rae_layout import RAELayoutError

State = Dict[str, Tensor]

#: Latent normalisation epsilon of ``AutoencoderRAE``: ``std + 1e-5``.
DIFFUSERS_STD_EPS = 1e-5
#: The input side transformers' DINOv2 position table is made for.
HF_DINOV2_IMAGE_SIZE = 518

_HF_LAYER = re.compile(r'^encoder\.layer\.(\d+)\.(.+)$')
# transformers name (5.x and 4.x) -> timm name, per layer.
_HF_LAYER_MAP = {
    'norm1': 'norm1',
    'norm2': 'norm2',
    'attention.o_proj': 'attn.proj',
    'attention.output.dense': 'attn.proj',
    'mlp.fc1': 'mlp.fc1',
    'mlp.fc2': 'mlp.fc2',
}
_HF_QKV = {
    'q': ('attention.q_proj', 'attention.attention.query'),
    'k': ('attention.k_proj', 'attention.attention.key'),
    'v': ('attention.v_proj', 'attention.attention.value'),
}
_HF_SCALE = {'layer_scale1.lambda1': 'ls1.gamma',
             'layer_scale2.lambda1': 'ls2.gamma'}
_DEC_ATTN = {
    'attention.to_q': 'attention.attention.query',
    'attention.to_k': 'attention.attention.key',
    'attention.to_v': 'attention.attention.value',
    'attention.to_out.0': 'attention.output.dense',
}


# ---------------------------------------------------------------------------
# Position tables.
# ---------------------------------------------------------------------------
def resample_positions(table: Tensor, grid: int) -> Tensor:
    """``[N, C]`` patch positions of a square grid -> ``[grid**2, C]``, the
    way transformers' DINOv2 resamples them at run time (bicubic,
    anti-aliased, in float32, back to the table's dtype)."""
    side = int(round(table.shape[0] ** 0.5))
    if side * side != table.shape[0]:
        raise RAELayoutError(f'a position table of {table.shape[0]} rows is '
                             'not a square grid')
    if side == grid:
        return table
    image = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    out = F.interpolate(image.float(), size=(grid, grid), mode='bicubic',
                        align_corners=False, antialias=True)
    return out.to(table.dtype).permute(0, 2, 3, 1).reshape(grid * grid, -1)


def positions_for_resampling(table: Tensor, side: int) -> Tensor:
    """The ``[side**2, C]`` table that :func:`resample_positions` turns into
    ``table`` ``[g**2, C]``: the least-norm solution of that linear map
    (exact up to float rounding when ``g <= side``)."""
    grid = int(round(table.shape[0] ** 0.5))
    if grid == side:
        return table
    if grid > side:
        raise RAELayoutError(
            f'a {grid}x{grid} position grid cannot be expressed by a '
            f'{side}x{side} table that is resampled down to it')
    basis = torch.eye(side * side, dtype=torch.float64).reshape(
        side * side, 1, side, side)
    # Column j of the map: the resampled j-th unit table.
    op = F.interpolate(basis, size=(grid, grid), mode='bicubic',
                       align_corners=False, antialias=True)
    op = op.reshape(side * side, grid * grid).T  # [g^2, side^2]
    solved = torch.linalg.pinv(op) @ table.double()
    return solved.to(table.dtype)


# ---------------------------------------------------------------------------
# Encoder: transformers DINOv2-with-registers <-> timm.
# ---------------------------------------------------------------------------
def _hf_layer_entry(state: Mapping[str, Tensor], i: int, names: Tuple[str,
                                                                      ...],
                    leaf: str, source: str) -> Tensor:
    for name in names:
        key = f'encoder.layer.{i}.{name}.{leaf}'
        if key in state:
            return state[key]
    raise RAELayoutError(f'{source}: encoder layer {i} has no '
                         f'{names[0]}.{leaf}')


def dinov2_hf_to_timm(state: Mapping[str, Tensor], grid: int,
                      source: str = 'file') -> State:
    """transformers DINOv2-with-registers weights (``encoder.`` prefix of
    the diffusers file removed) -> timm ``vit_*_reg4_dinov2`` weights for a
    ``grid x grid`` input (positions resampled as transformers does)."""
    need = ('embeddings.cls_token', 'embeddings.register_tokens',
            'embeddings.position_embeddings',
            'embeddings.patch_embeddings.projection.weight')
    missing = [k for k in need if k not in state]
    if missing:
        raise RAELayoutError(f'{source}: not a DINOv2-with-registers encoder '
                             f'(missing encoder.{missing[0]})')
    pos = state['embeddings.position_embeddings'][0]  # [1 + N, C]
    out: State = {
        'cls_token': state['embeddings.cls_token'] + pos[:1][None],
        'reg_token': state['embeddings.register_tokens'],
        'pos_embed': resample_positions(pos[1:], grid)[None],
        'patch_embed.proj.weight':
        state['embeddings.patch_embeddings.projection.weight'],
        'patch_embed.proj.bias':
        state['embeddings.patch_embeddings.projection.bias'],
    }
    width = out['cls_token'].shape[-1]
    known = set(need) | {'embeddings.mask_token',
                         'embeddings.patch_embeddings.projection.bias',
                         'layernorm.weight', 'layernorm.bias'}
    layers = sorted({int(m.group(1)) for m in map(_HF_LAYER.match, state)
                     if m})
    for i in layers:
        p = f'blocks.{i}.'
        for leaf in ('weight', 'bias'):
            out[p + f'attn.qkv.{leaf}'] = torch.cat([
                _hf_layer_entry(state, i, names, leaf, source)
                for names in _HF_QKV.values()])
            for hf, timm_name in _HF_LAYER_MAP.items():
                key = f'encoder.layer.{i}.{hf}.{leaf}'
                if key in state:
                    out[p + f'{timm_name}.{leaf}'] = state[key]
        for hf, timm_name in _HF_SCALE.items():
            out[p + timm_name] = state[f'encoder.layer.{i}.{hf}']
    for key in state:
        match = _HF_LAYER.match(key)
        sub = match.group(2).rsplit('.', 1)[0] if match else None
        if key in known or sub in _HF_LAYER_MAP or match and (
                match.group(2) in _HF_SCALE or any(
                    sub in names for names in _HF_QKV.values())):
            continue
        raise RAELayoutError(f'{source}: encoder.{key} is not part of a '
                             'DINOv2-with-registers encoder')
    # The final LayerNorm is used without its affine (as RAE does).
    out['norm.weight'] = torch.ones(width, dtype=out['cls_token'].dtype)
    out['norm.bias'] = torch.zeros(width, dtype=out['cls_token'].dtype)
    return out


def dinov2_timm_to_hf(state: Mapping[str, Tensor],
                      patch_size: int) -> State:
    """The inverse of :func:`dinov2_hf_to_timm` for transformers 5 names:
    the CLS position row is zero, the patch positions are those that
    transformers resamples to the timm grid."""
    width = state['cls_token'].shape[-1]
    side = HF_DINOV2_IMAGE_SIZE // patch_size
    pos = positions_for_resampling(state['pos_embed'][0], side)
    out: State = {
        'embeddings.cls_token': state['cls_token'].clone(),
        'embeddings.mask_token': torch.zeros(1, width),
        'embeddings.register_tokens': state['reg_token'].clone(),
        'embeddings.position_embeddings': torch.cat(
            [torch.zeros(1, width, dtype=pos.dtype), pos])[None],
        'embeddings.patch_embeddings.projection.weight':
        state['patch_embed.proj.weight'].clone(),
        'embeddings.patch_embeddings.projection.bias':
        state['patch_embed.proj.bias'].clone(),
    }
    inverse = {'norm1': 'norm1', 'norm2': 'norm2',
               'attn.proj': 'attention.o_proj', 'mlp.fc1': 'mlp.fc1',
               'mlp.fc2': 'mlp.fc2'}
    for key, value in state.items():
        match = re.match(r'^blocks\.(\d+)\.(.+)\.(weight|bias|gamma)$', key)
        if not match:
            continue
        i, sub, leaf = match.groups()
        p = f'encoder.layer.{i}.'
        if sub == 'attn.qkv':
            for name, part in zip(('q_proj', 'k_proj', 'v_proj'),
                                  value.chunk(3, 0)):
                out[p + f'attention.{name}.{leaf}'] = part.clone()
        elif sub in ('ls1', 'ls2'):
            out[p + f'layer_scale{sub[-1]}.lambda1'] = value.clone()
        else:
            out[p + f'{inverse[sub]}.{leaf}'] = value.clone()
    return out


# ---------------------------------------------------------------------------
# Decoder: diffusers names <-> RAE's GeneralDecoder names.
# ---------------------------------------------------------------------------
def decoder_diffusers_to_rae(state: Mapping[str, Tensor]) -> State:
    """diffusers ``RAEDecoder`` weights (``decoder.`` prefix removed) ->
    RAE ``GeneralDecoder`` names (see :mod:`.rae_layout`)."""
    out: State = {}
    for key, value in state.items():
        for new, old in _DEC_ATTN.items():
            key = key.replace(f'.{new}.', f'.{old}.')
        out[key] = value
    return out


def decoder_rae_to_diffusers(state: Mapping[str, Tensor]) -> State:
    """The inverse of :func:`decoder_diffusers_to_rae` (the fixed sin-cos
    table, not stored by diffusers, is dropped)."""
    out: State = {}
    for key, value in state.items():
        if key == 'decoder_pos_embed':
            continue
        for new, old in _DEC_ATTN.items():
            key = key.replace(f'.{old}.', f'.{new}.')
        out[key] = value
    return out


# ---------------------------------------------------------------------------
# Latent statistics.
# ---------------------------------------------------------------------------
def stats_from_diffusers(mean: Tensor, std: Tensor, scaling_factor: float,
                         eps: float = 1e-5) -> Tuple[Tensor, Tensor]:
    """``AutoencoderRAE``'s ``(z - mean) / (std + 1e-5) * scaling_factor``
    as this package's ``(z - mean) / sqrt(var + eps)``: ``(mean, var)``
    with ``var = ((std + 1e-5) / scaling_factor)**2 - eps``."""
    scale = (std.double() + DIFFUSERS_STD_EPS) / float(scaling_factor)
    var = scale ** 2 - eps
    if bool((var < 0).any()):
        raise RAELayoutError(
            f'latents_std has values below {eps ** 0.5:.4g} * '
            f'scaling_factor - 1e-5, which (z - mean) / sqrt(var + {eps:g}) '
            'cannot express; these statistics are not those of a VFM')
    return mean.float().clone(), var.float()


def stats_to_diffusers(mean: Tensor, var: Tensor,
                       eps: float = 1e-5) -> Tuple[Tensor, Tensor]:
    """The inverse of :func:`stats_from_diffusers` with scaling factor 1:
    ``(mean, std)`` with ``std = sqrt(var + eps) - 1e-5``."""
    std = (var.double() + eps).sqrt() - DIFFUSERS_STD_EPS
    return mean.float().clone(), std.float()
