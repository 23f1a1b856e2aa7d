"""Key layouts of the public RAE code's weight files, and the maps between
them and this package's modules.

RAE releases three kinds of files (read with ``torch.load`` or safetensors
by :mod:`decq_plugin.apis.convert_rae`):

* pixel decoder (``GeneralDecoder``; a ViT-MAE decoder):
  ``decoder_embed``, ``decoder_pos_embed`` [1, 1 + N, D] (fixed sin-cos, CLS
  row zero), ``trainable_cls_token`` [1, 1, D], ``decoder_layers.{i}.``
  (``layernorm_before``, ``attention.attention.{query,key,value}``,
  ``attention.output.dense``, ``layernorm_after``, ``intermediate.dense``,
  ``output.dense``), ``decoder_norm``, ``decoder_pred``;
* DiT-DH (``DiTwDDTHead``): ``s_embedder.proj`` / ``x_embedder.proj``
  (convs [D, C, p, p]), ``s_projector``, ``t_embedder.{W,mlp.0,mlp.2}``,
  ``y_embedder.embedding_table``, ``pos_embed`` [1, N, Db] (fixed),
  ``{enc,dec}_feat_rope.freqs_{cos,sin}`` [N, d] (fixed), ``blocks.{i}.``
  (body blocks first, then the head's: ``norm1``, ``attn.qkv``,
  ``attn.proj``, ``norm2``, ``mlp.w12``, ``mlp.w3``, ``adaLN_modulation.1``),
  ``final_layer.{norm_final,linear,adaLN_modulation.1}``;
* latent statistics: ``{'mean': [C, h, w], 'var': [C, h, w]}`` (loaded as
  they are by :class:`~decq_plugin.models.tokenizers.normalization.
  LatentNormalizer`; this package's ``patch_mean`` / ``patch_var`` files
  are taken too).

Training checkpoints wrap a state dict as ``{'model': ..., 'ema': ...}``
(keys possibly prefixed ``module.`` / ``_orig_mod.``); :func:`unwrap_state`
takes the EMA weights (and the ``decoder.*`` part of a stage-1
checkpoint). The maps are renames, except that RAE's separate key / value
projections are one ``kv`` projection here and its patch embedders are
convolutions (a reshape). The fixed tables (sin-cos, RoPE)
are not weights here; on import they are compared with this package's own
tables, which checks that both use the same layouts.
"""
import re
from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from .pos_embed import sincos_2d

State = Dict[str, Tensor]

DECODER_KIND = 'decoder'
DIT_KIND = 'dit'
STATS_KIND = 'stats'

_DEC_LAYER = re.compile(r'^decoder_layers\.(\d+)\.(.+)$')
_DEC_LAYER_MAP = {
    'layernorm_before': 'norm1',
    'attention.attention.query': 'attn.q',
    'attention.output.dense': 'attn.proj',
    'layernorm_after': 'norm2',
    'intermediate.dense': 'mlp.fc1',
    'output.dense': 'mlp.fc2',
}
_DEC_TOP_MAP = {
    'decoder_embed': 'patch_in',
    'decoder_norm': 'norm',
    'decoder_pred': 'head',
}
_DEC_FIXED = ('decoder_pos_embed', )

_DIT_BLOCK = re.compile(r'^blocks\.(\d+)\.(.+)$')
_DIT_BLOCK_MAP = {
    'norm1': 'norm1',
    'norm2': 'norm2',
    'attn.qkv': 'attn.qkv',
    'attn.proj': 'attn.proj',
    'mlp.w12': 'mlp.w_in',
    'mlp.w3': 'mlp.w_out',
    'adaLN_modulation.1': 'modulation.1',
}
_DIT_TOP_MAP = {
    's_embedder.proj': 'patch_in',
    'x_embedder.proj': 'head_patch_in',
    's_projector': 'patch_cond',
    't_embedder.mlp.0': 't_embedder.mlp.0',
    't_embedder.mlp.2': 't_embedder.mlp.2',
    'y_embedder.embedding_table': 'y_embedder.table',
    'final_layer.norm_final': 'final_norm.norm',
    'final_layer.adaLN_modulation.1': 'final_norm.modulation.1',
    'final_layer.linear': 'patch_out',
}
_DIT_FIXED = ('pos_embed', 'enc_feat_rope.freqs_cos', 'enc_feat_rope.freqs_sin',
              'dec_feat_rope.freqs_cos', 'dec_feat_rope.freqs_sin')
_WRAPPER_PREFIXES = ('module.', '_orig_mod.')


class RAELayoutError(ValueError):
    """A weight file is not in a layout of the RAE code this package knows,
    or does not fit the module it should fill."""


# ---------------------------------------------------------------------------
# Recognising a file.
# ---------------------------------------------------------------------------
def unwrap_state(obj: Mapping, source: str = 'file',
                 use_ema: bool = True) -> State:
    """The flat ``{name: tensor}`` state of a loaded RAE file (see
    :func:`unwrap_state_taken`)."""
    return unwrap_state_taken(obj, source, use_ema)[0]


def unwrap_state_taken(obj: Mapping, source: str = 'file',
                       use_ema: bool = True) -> Tuple[State, str]:
    """The flat ``{name: tensor}`` state of a loaded RAE file and which
    weights were taken: training checkpoints ``{'ema': ..., 'model': ...}``
    give ``'ema'`` (``'model'`` with ``use_ema=False`` or when the file
    has no ``'ema'``); DDP / compile prefixes are dropped; an RAE stage-1
    training checkpoint (``encoder.*`` / ``decoder.*``) gives its
    ``decoder.*`` entries."""
    if not isinstance(obj, Mapping):
        raise RAELayoutError(f'{source} holds a {type(obj).__name__}, not a '
                             'state dict')
    taken = 'the state dict'
    if 'ema' in obj or 'model' in obj:
        key = 'ema' if use_ema and 'ema' in obj else 'model'
        if key not in obj:
            raise RAELayoutError(f"{source} has no '{key}' entry (keys: "
                                 f'{sorted(map(str, obj))[:10]})')
        if key == 'ema':
            taken = "the EMA weights ('ema')"
        elif use_ema:
            taken = ("the raw weights ('model'): the file has no 'ema' "
                     'entry')
        else:
            taken = "the raw weights ('model'), as asked"
        obj = obj[key]
        if not isinstance(obj, Mapping):
            raise RAELayoutError(f"{source}['{key}'] is not a state dict")
    state = {}
    for name, value in obj.items():
        if not isinstance(value, Tensor):
            raise RAELayoutError(
                f'{source}: entry {name!r} is a {type(value).__name__}, not '
                'a tensor; not a weight file of the RAE code')
        state[_strip_wrappers(str(name))] = value
    decoder = stage1_decoder(state)
    if decoder is not None:
        state = decoder
        taken += (' of an RAE stage-1 training checkpoint, its decoder.* '
                  'entries (encoder.*: the VFM, taken from the config)')
    return state, taken


def _strip_wrappers(name: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix):], True
    return name


def stage1_decoder(state: Mapping[str, Tensor]) -> Optional[State]:
    """The pixel-decoder entries of an RAE stage-1 model state (the ``RAE``
    module: ``encoder.*`` VFM, ``decoder.*`` ``GeneralDecoder``), without
    their ``decoder.`` prefix; ``None`` for any other state."""
    if not any(k.startswith('decoder.decoder_') for k in state):
        return None
    return {k[len('decoder.'):]: v for k, v in state.items()
            if k.startswith('decoder.')}


def _is_decoder_key(name: str) -> bool:
    match = _DEC_LAYER.match(name)
    if match:
        sub = match.group(2).rsplit('.', 1)[0]
        return sub in _DEC_LAYER_MAP or sub in (
            'attention.attention.key', 'attention.attention.value')
    top = name.rsplit('.', 1)[0]
    return (top in _DEC_TOP_MAP or name in _DEC_FIXED
            or name == 'trainable_cls_token')


def _is_dit_key(name: str) -> bool:
    match = _DIT_BLOCK.match(name)
    if match:
        return match.group(2).rsplit('.', 1)[0] in _DIT_BLOCK_MAP
    return (name.rsplit('.', 1)[0] in _DIT_TOP_MAP or name in _DIT_FIXED
            or name == 't_embedder.W')


def recognise(state: Mapping[str, Tensor], source: str = 'file') -> str:
    """``'decoder'``, ``'dit'`` or ``'stats'``: which RAE file ``state``
    is. Raises :class:`RAELayoutError` naming the keys that belong to none
    of them."""
    keys = list(state)
    if set(keys) == {'mean', 'var'} or {'patch_mean', 'patch_var'} <= set(
            keys) <= {'patch_mean', 'patch_var', 'count'}:
        return STATS_KIND
    if any(k.startswith('decoder_') for k in keys):
        kind, known = DECODER_KIND, _is_decoder_key
    elif any(k.startswith(('s_embedder.', 'x_embedder.')) for k in keys):
        kind, known = DIT_KIND, _is_dit_key
    else:
        hint = ''
        if any(k.startswith('encoder.') for k in keys):
            hint = (' It looks like an RAE training checkpoint without a '
                    'decoder; give the pixel decoder file written by RAE\'s '
                    'extract_decoder.py instead.')
        raise RAELayoutError(
            f'{source} is not an RAE decoder, DiT-DH or statistics file: '
            f'none of its keys is known (e.g. {keys[:8]}).{hint}')
    unknown = [k for k in keys if not known(k)]
    if any('.attention.to_q.' in k for k in unknown):
        raise RAELayoutError(
            f'{source} is in the diffusers AutoencoderRAE layout; pass its '
            'folder (config.json + diffusion_pytorch_model.safetensors) as '
            '--diffusers FOLDER instead')
    if unknown:
        raise RAELayoutError(
            f'{source} looks like an RAE {kind} file but has {len(unknown)} '
            f'keys that are not in that layout: {unknown[:12]}')
    return kind


# ---------------------------------------------------------------------------
# Pixel decoder.
# ---------------------------------------------------------------------------
def _check_table(name: str, got: Tensor, want: Tensor, source: str) -> None:
    """Refuse a fixed table of another layout. Half-precision files (RAE's
    ``extract_decoder.py --dtype fp16|bf16``) are compared at their own
    precision: ``want`` rounded to the file's dtype, within one epsilon."""
    if tuple(got.shape) != tuple(want.shape):
        raise RAELayoutError(
            f'{source}: the fixed table {name!r} has shape '
            f'{tuple(got.shape)}, this model computes {tuple(want.shape)}: '
            'the file is for another grid (image / patch size) or width')
    if got.dtype in (torch.float16, torch.bfloat16):
        ref, atol = want.to(got.dtype).float(), torch.finfo(got.dtype).eps
    else:
        ref, atol = want.float(), 1e-4
    diff = float((got.float() - ref).abs().max()) if got.numel() else 0.0
    if not diff <= atol:
        raise RAELayoutError(
            f'{source}: the fixed table {name!r} {tuple(got.shape)} differs '
            f'from the one this model computes by up to {diff:.3g} '
            f'(compared at the file\'s precision, {got.dtype}, tolerance '
            f'{atol:g}): another position layout (e.g. a row-first sin-cos '
            'table or another RoPE channel pairing) than RAE\'s')


def fit_state(module: nn.Module, state: State, source: str) -> State:
    """``state`` if it has exactly ``module``'s keys and shapes."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f'{k}: file {tuple(state[k].shape)} vs model '
              f'{tuple(own[k].shape)}' for k in state
              if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise RAELayoutError(
            f'{source} does not fit the {type(module).__name__} of the '
            f'config: missing {missing[:8]}, unexpected {unexpected[:8]}, '
            f'shapes {shapes[:8]}')
    return state


def decoder_from_rae(state: Mapping[str, Tensor], decoder: nn.Module,
                     source: str = 'file') -> State:
    """RAE ``GeneralDecoder`` weights -> a state dict of ``decoder`` (a
    :class:`~decq_plugin.models.decoders.ViTPixelDecoder` with RAE's CLS
    token and output parametrisation, no queries)."""
    if recognise(state, source) != DECODER_KIND:
        raise RAELayoutError(f'{source} is not an RAE decoder file')
    if getattr(decoder, 'cls_token', None) is None or getattr(
            decoder, 'out_mean', None) is None or decoder.num_queries:
        raise RAELayoutError(
            'RAE decoders need a ViTPixelDecoder with cls_token=True, the '
            'ImageNet out_mean / out_std and no queries; the config has '
            'another form')
    out: State = {}
    for name, value in state.items():
        match = _DEC_LAYER.match(name)
        if match:
            index, rest = match.groups()
            sub, leaf = rest.rsplit('.', 1)
            if sub in ('attention.attention.key', 'attention.attention.value'):
                continue
            out[f'blocks.{index}.{_DEC_LAYER_MAP[sub]}.{leaf}'] = value
        elif name == 'trainable_cls_token':
            out['cls_token'] = value
        elif name not in _DEC_FIXED:
            top, leaf = name.rsplit('.', 1)
            out[f'{_DEC_TOP_MAP[top]}.{leaf}'] = value
    layers = sorted({int(m.group(1)) for m in map(_DEC_LAYER.match, state)
                     if m})
    for i in layers:
        for leaf in ('weight', 'bias'):
            parts = [state.get(f'decoder_layers.{i}.attention.attention.'
                               f'{kind}.{leaf}') for kind in ('key', 'value')]
            if all(p is not None for p in parts):
                out[f'blocks.{i}.attn.kv.{leaf}'] = torch.cat(parts, 0)
    if 'decoder_pos_embed' in state:
        width, grid = decoder.arch['width'], decoder.grid_size
        want = torch.cat([torch.zeros(1, width),
                          sincos_2d(width, grid, grid)])[None]
        _check_table('decoder_pos_embed', state['decoder_pos_embed'], want,
                     source)
    return fit_state(decoder, out, source)


def decoder_to_rae(decoder: nn.Module) -> State:
    """The inverse of :func:`decoder_from_rae`: ``decoder``'s weights in
    RAE's ``GeneralDecoder`` layout (fixed table included)."""
    if getattr(decoder, 'cls_token', None) is None or decoder.num_queries:
        raise RAELayoutError('only a patch-only decoder with a CLS token has '
                             'an RAE layout')
    inverse_layer = {v: k for k, v in _DEC_LAYER_MAP.items()}
    inverse_top = {v: k for k, v in _DEC_TOP_MAP.items()}
    out: State = {}
    for name, value in decoder.state_dict().items():
        value = value.detach().clone()
        if name == 'cls_token':
            out['trainable_cls_token'] = value
            continue
        sub, leaf = name.rsplit('.', 1)
        if name.startswith('blocks.'):
            _, index, sub = sub.split('.', 2)
            prefix = f'decoder_layers.{index}.'
            if sub == 'attn.kv':
                key, val = value.chunk(2, dim=0)
                out[f'{prefix}attention.attention.key.{leaf}'] = key
                out[f'{prefix}attention.attention.value.{leaf}'] = val
            else:
                out[f'{prefix}{inverse_layer[sub]}.{leaf}'] = value
        else:
            out[f'{inverse_top[sub]}.{leaf}'] = value
    width, grid = decoder.arch['width'], decoder.grid_size
    out['decoder_pos_embed'] = torch.cat(
        [torch.zeros(1, width), sincos_2d(width, grid, grid)])[None]
    return out


# ---------------------------------------------------------------------------
# DiT-DH.
# ---------------------------------------------------------------------------
def _dit_tables(model: nn.Module) -> Dict[str, Tensor]:
    """The fixed tables of an RAE-mode ``DiTDH`` in RAE's layout."""
    n = model.num_patches
    tables = {'pos_embed': model.pos_embed.detach().clone()}
    if model.use_rope:
        for part, rae in (('body', 'enc'), ('head', 'dec')):
            for fn in ('cos', 'sin'):
                tables[f'{rae}_feat_rope.freqs_{fn}'] = getattr(
                    model, f'{part}_rope_{fn}')[:n].detach().clone()
    return tables


def ditdh_from_rae(state: Mapping[str, Tensor], model: nn.Module,
                   source: str = 'file') -> State:
    """RAE ``DiTwDDTHead`` weights -> a state dict of ``model`` (a
    :class:`~decq_plugin.models.diffusion.DiTDH` in RAE mode)."""
    if recognise(state, source) != DIT_KIND:
        raise RAELayoutError(f'{source} is not an RAE DiT-DH file')
    if model.num_queries:
        raise RAELayoutError('RAE DiT-DH files fill an RAE-mode DiTDH '
                             '(num_queries=0); the config has queries')
    depth = model.arch['body_depth']
    out: State = {}
    for name, value in state.items():
        match = _DIT_BLOCK.match(name)
        if match:
            index, rest = int(match.group(1)), match.group(2)
            sub, leaf = rest.rsplit('.', 1)
            part, i = (('body_blocks', index) if index < depth else
                       ('head_blocks', index - depth))
            out[f'{part}.{i}.{_DIT_BLOCK_MAP[sub]}.{leaf}'] = value
        elif name == 't_embedder.W':
            out['t_embedder.freqs'] = value
        elif name not in _DIT_FIXED:
            top, leaf = name.rsplit('.', 1)
            if top.endswith('_embedder.proj') and leaf == 'weight':
                value = value.flatten(1)  # conv [D, C, p, p] -> [D, C*p*p]
            out[f'{_DIT_TOP_MAP[top]}.{leaf}'] = value
    tables = _dit_tables(model)
    for name in _DIT_FIXED:
        if name in state:
            if name not in tables:
                raise RAELayoutError(f'{source} has {name!r} but the config '
                                     'builds a DiTDH without RoPE')
            _check_table(name, state[name], tables[name], source)
    return fit_state(model, out, source)


def ditdh_to_rae(model: nn.Module) -> State:
    """The inverse of :func:`ditdh_from_rae`: an RAE-mode ``DiTDH``'s
    weights in RAE's ``DiTwDDTHead`` layout (fixed tables included)."""
    if model.num_queries:
        raise RAELayoutError('only an RAE-mode DiTDH has an RAE layout')
    inverse_block = {v: k for k, v in _DIT_BLOCK_MAP.items()}
    inverse_top = {v: k for k, v in _DIT_TOP_MAP.items()}
    depth, p = model.arch['body_depth'], model.patch_size
    out: State = {}
    for name, value in model.state_dict().items():
        value = value.detach().clone()
        if name == 't_embedder.freqs':
            out['t_embedder.W'] = value
            continue
        sub, leaf = name.rsplit('.', 1)
        if name.startswith(('body_blocks.', 'head_blocks.')):
            part, index, sub = sub.split('.', 2)
            index = int(index) + (depth if part == 'head_blocks' else 0)
            out[f'blocks.{index}.{inverse_block[sub]}.{leaf}'] = value
            continue
        top = inverse_top[sub]
        if top.endswith('_embedder.proj') and leaf == 'weight':
            value = value.view(value.shape[0], -1, p, p)
        out[f'{top}.{leaf}'] = value
    out.update(_dit_tables(model))
    return out

