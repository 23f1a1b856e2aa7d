"""Every config under configs/ (``_base_`` excluded): it loads, its model
builds (the demo for real, full-size ones on the meta device with the
pretrained weights switched off), parameter counts of the tokenizer parts
match hand counts, names match contents, ablations change only what they
name, and inheritance stays shallow."""
import ast
import copy
import re
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch
from mmengine.config import Config

from decq_plugin.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / 'configs'
ALL_CONFIGS = sorted(p for p in CONFIG_DIR.rglob('*.py')
                     if '_base_' not in p.relative_to(CONFIG_DIR).parts)


def _model_type(path: Path) -> str:
    try:
        return Config.fromfile(str(path)).model.type
    except Exception:  # reported by test_loads
        return '<does not load>'


# Stage-1 (tokenizer) configs; the stage-2 ones are only loaded here.
CONFIGS = [p for p in ALL_CONFIGS if _model_type(p) == 'AutoencoderModel']
DEMO = [p for p in CONFIGS if p.parent.name == 'demo']
FULL = [p for p in CONFIGS if p.parent.name != 'demo']
NAME = re.compile(r'^(?P<algo>[a-z0-9-]+)'
                  r'_(?P<settings>[a-z0-9.-]+(_[a-z0-9.-]+)*)'
                  r'_(?P<gpus>\d+)xb(?P<batch>\d+)-(?P<epochs>\d+)e'
                  r'_(?P<data>[a-z0-9]+)-(?P<res>\d+)\.py$')

RAE = 'rae/rae_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py'
DECQ = 'decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py'
# The VFMs of the configs: timm name -> (settings tag in config names,
# prefix tokens, VFM input side at 256 px output).
VFMS = {
    'vit_base_patch14_reg4_dinov2': ('dinov2-b-reg', 5, 224),
    'vit_base_patch16_siglip_256.v2_webli': ('siglip2-b16', 0, 256),
    'vit_base_patch16_224.mae': ('mae-b16', 1, 256),
    'vit_base_patch16_clip_quickgelu_224.openai': ('clip-b16', 1, 256),
}
# What each config changes relative to its parent (flattened key -> value).
CHANGES = {
    'decq/decq_q1-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py':
    {'model.tokenizer.condenser.num_queries': 1},
    'decq/decq_q4-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py':
    {'model.tokenizer.condenser.num_queries': 4},
    'decq/decq_q16-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py':
    {'model.tokenizer.condenser.num_queries': 16},
    'decq/decq_q8-l03_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py':
    {'model.tokenizer.condenser.layers': (0, 3)},
    'decq/decq_q8-l69_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py':
    {'model.tokenizer.condenser.layers': (6, 9)},
    'ablations/vfm-finetune_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py':
    {'model.tokenizer.type': 'VFMFinetuneTokenizer'},
    'ablations/vfm-distill_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py':
    {'model.tokenizer.type': 'VFMDistillTokenizer',
     'model.tokenizer.distill_weight': 1.0},
    'ablations/vfm-feat-concat_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py':
    {'model.tokenizer.type': 'VFMFeatConcatTokenizer',
     'model.tokenizer.bottleneck_dim': 32},
}
# Other VFMs: the DINOv2 recipe with another timm model at 256 px.
for _name, (_tag, _, _size) in VFMS.items():
    if _tag != 'dinov2-b-reg':
        for _cfg in (f'rae/rae_{_tag}_vit-xl_8xb64-16e_in1k-256.py',
                     f'decq/decq_q8-l0369_{_tag}_vit-xl_8xb64-16e_in1k-'
                     '256.py'):
            CHANGES[_cfg] = {'model.tokenizer.encoder.model_name': _name,
                             'model.tokenizer.encoder.input_size': _size}
# 512 px: VFM at 448 px (32x32 latents), crops at 512.
_CHANGES_512 = {
    'model.tokenizer.encoder.input_size': 448,
    'train_dataloader.dataset.transform.resize': 768,
    'train_dataloader.dataset.transform.crop': 512,
    'val_dataloader.dataset.transform.size': 512,
    'test_dataloader.dataset.transform.size': 512}
CHANGES['rae/rae_dinov2-b-reg_vit-xl_8xb64-16e_in1k-512.py'] = _CHANGES_512
CHANGES['decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-512.py'] = \
    _CHANGES_512
# The demo swaps in tiny networks and the bundled photos, nothing else.
DEMO_MAY_CHANGE = (
    'image_size', 'tiny_vfm.', 'model.tokenizer.encoder.',
    'model.tokenizer.decoder.',
    'model.tokenizer.condenser.num_heads', 'model.perceptual_loss.',
    'model.discriminator.', 'train_dataloader', 'val_dataloader',
    'test_dataloader', 'val_evaluator', 'test_evaluator',
    'train_cfg.val_interval', 'default_hooks.logger.', 'custom_hooks',
    'default_hooks.checkpoint.', 'model_wrapper_cfg.find_unused_parameters',
    'data_root')


def _rel(path: Path) -> str:
    return path.relative_to(CONFIG_DIR).as_posix()


def _ids(paths: List[Path]) -> List[str]:
    return [_rel(p) for p in paths]


def _bases(path: Path) -> List[Path]:
    """The files named in ``_base_`` of ``path`` (not followed)."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '_base_'
                for t in node.targets):
            value = ast.literal_eval(node.value)
            names = [value] if isinstance(value, str) else list(value)
            return [(path.parent / n).resolve() for n in names]
    return []


def _depth(path: Path) -> int:
    """Longest chain of ``_base_`` hops above ``path``."""
    return max((1 + _depth(b) for b in _bases(path)), default=0)


def _flatten(cfg: dict, prefix: str = '') -> Dict[str, object]:
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


def _diff(child: Path, parent: Path) -> Dict[str, object]:
    a = _flatten(Config.fromfile(str(child)).to_dict())
    b = _flatten(Config.fromfile(str(parent)).to_dict())
    return {k: a.get(k, '<absent>') for k in set(a) | set(b)
            if a.get(k, '<absent>') != b.get(k, '<absent>')}


def _count(module: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters()
               if p.requires_grad or not trainable)


# -- hand counts --------------------------------------------------------------
def _vit_block(w: int, mlp: int, layer_scale: bool = False) -> int:
    """Pre-LN ViT block: attention 4w^2+4w, MLP 2*w*mlp+mlp+w, 2 LNs 4w."""
    return 4 * w * w + 4 * w + 2 * w * mlp + mlp + w + 4 * w + \
        (2 * w if layer_scale else 0)


def _dinov2_b_reg4(grid: int = 16) -> int:
    """timm vit_base_patch14_reg4_dinov2 at 224 px (16x16 grid), final norm
    and head dropped: patch conv, CLS, 4 registers, patch positions only,
    12 blocks with layer scale. (timm's own count of 86.58M is at 518 px,
    whose position table is 37x37.)"""
    w = 768
    return (3 * 14 * 14 * w + w) + w + 4 * w + grid * grid * w + \
        12 * _vit_block(w, 4 * w, layer_scale=True)


def _vit_b16(grid: int, cls: bool, pre_norm: bool = False) -> int:
    """A timm ViT-B/16 trunk (final norm and head dropped): patch conv (no
    bias before CLIP's pre-norm), CLS when ``cls``, learned positions for
    CLS and patches, the pre-norm when ``pre_norm``, 12 blocks."""
    w = 768
    return (3 * 16 * 16 * w + (0 if pre_norm else w)) + (w if cls else 0) + \
        (grid * grid + int(cls)) * w + (2 * w if pre_norm else 0) + \
        12 * _vit_block(w, 4 * w)


def _vfm(name: str, grid: int) -> int:
    """Hand count of the VFM ``name`` at a ``grid x grid`` patch grid."""
    if name == 'vit_base_patch14_reg4_dinov2':
        return _dinov2_b_reg4(grid)
    if 'siglip' in name:  # no CLS, MAP head dropped
        return _vit_b16(grid, cls=False)
    return _vit_b16(grid, cls=True, pre_norm='clip' in name)


def _vfm_patch(name: str) -> int:
    return int(re.search(r'patch(\d+)', name)[1])


def _decoder_xl(in_channels: int = 768, num_queries: int = 0) -> int:
    w, out = 1152, 16 * 16 * 3
    total = 28 * _vit_block(w, 4096) + in_channels * w + w + 2 * w + \
        w * out + out + w  # ... + RAE's CLS token
    if num_queries:
        total += 768 * w + w + num_queries * w
    return total


def _condenser(num_queries: int, num_layers: int, d: int = 768) -> int:
    """Per layer: LN(q), LN(kv), attention 4d^2+4d, LN, MLP 8d^2+5d."""
    return num_layers * (3 * 2 * d + 4 * d * d + 4 * d + 8 * d * d + 5 * d) \
        + num_queries * d


def test_hand_counts_agree_with_reference_numbers():
    assert round(_dinov2_b_reg4(37) / 1e6, 2) == 86.58  # timm at 518 px
    assert round(_decoder_xl() / 1e6, 2) == 415.06
    # timm's ViT-B/16 at 224 px with its final norm, no head: 86,567,656
    # parameters with the 1000-class head (768 * 1000 + 1000).
    assert _vit_b16(14, cls=True) + 2 * 768 == 86_567_656 - 769_000


# -- every config -------------------------------------------------------------
def test_configs_found():
    assert len(CONFIGS) >= 11 and DEMO
    assert RAE in _ids(CONFIGS) and DECQ in _ids(CONFIGS)


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=_ids(ALL_CONFIGS))
def test_loads(path):
    cfg = Config.fromfile(str(path))
    assert cfg.default_scope == 'decq_plugin'
    for key in ('model', 'train_dataloader', 'train_cfg'):
        assert key in cfg, key
    assert NAME.match(path.name), \
        f'{path.name} does not follow the naming scheme'


def test_runtime_seeds_each_rank_differently():
    """Data-parallel ranks must not draw the same flow-matching noise and
    timesteps: the shipped runtime adds the rank to the seed, and every
    config that sets ``randomness`` keeps it."""
    base = Config.fromfile(str(CONFIG_DIR / '_base_/default_runtime.py'))
    assert base.randomness.diff_rank_seed is True
    for path in ALL_CONFIGS:
        randomness = Config.fromfile(str(path)).get('randomness')
        if randomness is not None:
            assert randomness.get('diff_rank_seed') is True, path.name


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=_ids(ALL_CONFIGS))
def test_inheritance_depth(path):
    # Recipes: at most three levels. A demo config only shrinks one recipe,
    # one level above it.
    limit = 3
    if path.parent.name == 'demo':
        parent, = _bases(path)
        limit = max(3, 1 + min(3, _depth(parent)))
    assert _depth(path) <= limit
    for base in _bases(path):
        assert base.is_file(), base


@pytest.mark.parametrize('path', CONFIGS, ids=_ids(CONFIGS))
def test_tokenizer_config_name_matches_contents(path):
    cfg = Config.fromfile(str(path))
    for key in ('train_dataloader', 'val_dataloader', 'optim_wrapper',
                'param_scheduler', 'train_cfg', 'val_evaluator'):
        assert key in cfg, key
    match = NAME.match(path.name)
    assert int(match['batch']) == cfg.train_dataloader.batch_size
    assert int(match['epochs']) == cfg.train_cfg.max_epochs
    enc = cfg.model.tokenizer.encoder
    grid = enc.input_size // _vfm_patch(enc.model_name)
    assert grid * _vfm_patch(enc.model_name) == enc.input_size
    assert grid * cfg.model.tokenizer.decoder.patch_size == int(match['res'])
    tag = VFMS[enc.model_name][0]
    if path.parent.name != 'demo' or tag != 'dinov2-b-reg':
        assert f'_{tag}_' in path.name or f'-{tag}_' in path.name
    if match['algo'] == 'decq':
        assert cfg.model.tokenizer.type == 'DecQTokenizer'
        q = re.search(r'_q(\d+)-l(\d+)_', path.name)
        if q:  # e.g. q8-l0369: 8 queries on blocks 0, 3, 6, 9
            cond = cfg.model.tokenizer.condenser
            assert cond.num_queries == int(q[1])
            assert tuple(cond.layers) == tuple(int(c) for c in q[2])


def test_demo_builds_and_runs():
    for path in DEMO:
        cfg = Config.fromfile(str(path))
        assert cfg.model.tokenizer.encoder.pretrained is False
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        tok = model.tokenizer
        assert tok.image_size == cfg.image_size
        # the full VFM's layout (12 blocks, its prefix tokens), tiny width
        prefix = VFMS[cfg.model.tokenizer.encoder.model_name][1]
        assert tok.encoder.num_blocks == 12
        assert tok.encoder.num_prefix_tokens == prefix
        assert _count(tok) < 5e6
        images = torch.rand(2, 3, cfg.image_size, cfg.image_size)
        model.eval()
        with torch.no_grad():
            out = model.val_step(dict(inputs=images, data_samples=dict(
                gt_label=torch.tensor([0, 1]))))
        assert len(out) == 2
        assert out[0]['pred'].shape == (3, cfg.image_size, cfg.image_size)


def _expected_tokenizer(path: Path, cfg) -> Tuple[dict, dict]:
    """(total, trainable) parameter counts per tokenizer part, by hand."""
    tok = cfg.model.tokenizer
    grid = tok.encoder.input_size // _vfm_patch(tok.encoder.model_name)
    vfm = _vfm(tok.encoder.model_name, grid)
    total = dict(encoder=vfm)
    trainable = dict(encoder=0)
    if tok.type in ('DecQTokenizer', 'VFMFeatConcatTokenizer'):
        layers = len(tok.condenser.layers)
        q = tok.condenser.num_queries
        if tok.type == 'VFMFeatConcatTokenizer':
            q = grid * grid  # one query per patch
            total['bottleneck'] = 768 * tok.bottleneck_dim + tok.bottleneck_dim
            total['decoder'] = _decoder_xl(768 + tok.bottleneck_dim)
        else:
            total['decoder'] = _decoder_xl(num_queries=q)
        total['condenser'] = _condenser(q, layers)
    else:
        total['decoder'] = _decoder_xl()
    if tok.type in ('VFMFinetuneTokenizer', 'VFMDistillTokenizer'):
        trainable['encoder'] = vfm
    if tok.type == 'VFMDistillTokenizer':
        total['teacher'] = vfm
        trainable['teacher'] = 0
    for key in total:
        trainable.setdefault(key, total[key])
    return total, trainable


def _meta_model_cfg(cfg):
    """The model config with downloads off and no discriminator (built
    apart: spectral norm's power iterations crawl on the meta device)."""
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.tokenizer.encoder.pretrained = False
    model_cfg.perceptual_loss.pretrained_trunk = False
    model_cfg.discriminator = None
    return model_cfg


@pytest.mark.parametrize('path', FULL, ids=_ids(FULL))
def test_full_size_builds_on_meta(path):
    cfg = Config.fromfile(str(path))
    # The recipe loads real weights; only the test switches them off.
    assert cfg.model.tokenizer.encoder.pretrained is True
    assert cfg.model.discriminator.pretrained is True
    assert cfg.model.perceptual_loss.get('pretrained_trunk', True) is True
    with warnings.catch_warnings():
        # LPIPS copies its shipped linear heads into meta tensors (no-op).
        warnings.simplefilter('ignore', UserWarning)
        with torch.device('meta'):
            model = MODELS.build(_meta_model_cfg(cfg))
    tok = model.tokenizer
    assert next(tok.decoder.parameters()).is_meta
    res = int(NAME.match(path.name)['res'])
    grid = res // 16  # decoder patch 16
    assert tok.latent_shapes['patch'][1:] == (grid, grid)
    assert tok.image_size == res
    total, trainable = _expected_tokenizer(path, cfg)
    for name in total:
        part = getattr(tok, name)
        assert _count(part) == total[name], name
        assert _count(part, trainable=True) == trainable[name], name
    assert _count(tok) == sum(total.values())
    num_queries = cfg.model.tokenizer.get('condenser', {}).get('num_queries')
    if cfg.model.tokenizer.type == 'DecQTokenizer':
        assert tok.latent_shapes == {'patch': (768, grid, grid),
                                     'query': (num_queries, 768)}
        # condensers on the quarter points of the VFM's blocks
        depth = tok.encoder.num_blocks
        if re.search(r'_q\d+-l0369_', path.name):
            assert tok.condenser.layers == [0, depth // 4, depth // 2,
                                            3 * depth // 4]


def test_full_size_discriminator():
    """The discriminator is the same in every full-size config; built once
    on the CPU (random weights)."""
    cfgs = [Config.fromfile(str(p)).model.discriminator for p in FULL]
    assert all(c == cfgs[0] for c in cfgs)
    torch.manual_seed(0)
    disc = MODELS.build(dict(cfgs[0], pretrained=False))
    # DINO ViT-S/8 at 224 px (28x28 patches + CLS), every block kept for
    # the last head: patch conv, CLS, positions, 12 blocks.
    w = 384
    vit_s8 = (3 * 8 * 8 * w + w) + w + 785 * w + 12 * _vit_block(w, 4 * w)
    assert _count(disc.feature_net) == vit_s8
    assert _count(disc.feature_net, trainable=True) == 0
    assert disc.block_indices == [2, 5, 8, 11] and len(disc.heads) == 4
    assert _count(disc.heads, trainable=True) == _count(disc.heads) > 0


@pytest.mark.parametrize('path', FULL, ids=_ids(FULL))
def test_full_configs_follow_the_spec(path):
    cfg = Config.fromfile(str(path))
    m = cfg.model
    res = int(NAME.match(path.name)['res'])
    assert m.tokenizer.encoder.model_name in VFMS
    assert m.tokenizer.encoder.input_size == \
        VFMS[m.tokenizer.encoder.model_name][2] * res // 256
    assert m.tokenizer.decoder.arch == 'XL' and \
        m.tokenizer.decoder.patch_size == 16
    assert m.tokenizer.noise_tau == 0.8
    assert (m.l1_weight, m.perceptual_weight, m.gan_weight) == (1.0, 1.0,
                                                                0.75)
    assert (m.disc_start, m.gan_start, m.schedule_unit) == (6, 8, 'epoch')
    assert m.discriminator.model_name == 'vit_small_patch8_224.dino'
    for key in ('tokenizer', 'discriminator'):
        opt = cfg.optim_wrapper[key].optimizer
        assert (opt.type, opt.lr, tuple(opt.betas), opt.weight_decay) == (
            'AdamW', 2e-4, (0.9, 0.95), 0.0)
    assert cfg.train_cfg.max_epochs == 16
    assert cfg.param_scheduler[-1].eta_min == 2e-5
    assert cfg.param_scheduler[0].end == 1  # one warm-up epoch
    assert cfg.custom_hooks[0].momentum == pytest.approx(1 - 0.9978)
    gpus = int(NAME.match(path.name)['gpus'])
    assert gpus * cfg.train_dataloader.batch_size == 512
    if m.tokenizer.type == 'DecQTokenizer':
        cond = m.tokenizer.condenser
        assert (cond.tap, cond.kv_tokens,
                cond.final_norm) == ('output', 'patch', True)


# -- ablations change only what they name -------------------------------------
def test_every_derived_config_is_listed():
    derived = {_rel(p) for p in CONFIGS
               if any('_base_' not in b.relative_to(CONFIG_DIR).parts
                      for b in _bases(p))}
    assert derived == set(CHANGES) | {_rel(p) for p in DEMO}


@pytest.mark.parametrize('rel', sorted(CHANGES))
def test_ablation_differs_only_in_what_it_changes(rel):
    path = CONFIG_DIR / rel
    parent, = _bases(path)
    diff = _diff(path, parent)
    assert diff == CHANGES[rel]


def test_decq_differs_from_rae_only_in_the_tokenizer():
    diff = _diff(CONFIG_DIR / DECQ, CONFIG_DIR / RAE)
    assert diff['model.tokenizer.type'] == 'DecQTokenizer'
    assert diff['model.tokenizer.condenser.num_queries'] == 8
    assert diff['model.tokenizer.condenser.layers'] == (0, 3, 6, 9)
    assert all(k.startswith('model.tokenizer.') for k in diff)
    assert not any(k.startswith(('model.tokenizer.encoder',
                                 'model.tokenizer.decoder')) for k in diff)


def test_demo_keeps_the_recipe():
    for path in DEMO:
        parent, = _bases(path)
        diff = _diff(path, parent)
        outside = [k for k in diff if not k.startswith(DEMO_MAY_CHANGE)]
        assert outside == []


TINY_VFM = [p for p in DEMO if '_tiny-' in p.name]


def _full_recipe_of(tiny: Path) -> Path:
    """``decq_tiny-clip-b16_...`` -> ``decq/decq_q8-l0369_clip-b16_...``."""
    algo, vfm = re.match(r'(rae|decq)_tiny-(.+?)_1xb8', tiny.name).groups()
    head = 'decq/decq_q8-l0369_' if algo == 'decq' else 'rae/rae_'
    return CONFIG_DIR / f'{head}{vfm}_vit-xl_8xb64-16e_in1k-256.py'


@pytest.mark.parametrize('path', TINY_VFM, ids=_ids(TINY_VFM))
def test_tiny_vfm_demo_is_its_full_recipe_shrunk(path):
    # A tiny VFM demo inherits the tiny DINOv2 demo and swaps the VFM; what
    # it ends up as differs from its own full recipe only as a demo may.
    full = _full_recipe_of(path)
    diff = _diff(path, full)
    assert [k for k in diff if not k.startswith(DEMO_MAY_CHANGE)] == []
    name = Config.fromfile(str(full)).model.tokenizer.encoder.model_name
    assert Config.fromfile(str(path)).model.tokenizer.encoder.model_name \
        == name
