"""tools/convert_rae_checkpoint.py: files in the public RAE code's layout
(written here from this package's own tiny models) convert into checkpoints
that the tools and the API load, give back the same weights, and compute
what the RAE code computes -- checked against a forward pass written here
from RAE's definitions on the RAE-layout weights. Unknown files are refused
with the keys that do not fit."""
import argparse
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope

from decq_plugin.apis import (build_model_from_config,
                              build_tokenizer_from_config)
from decq_plugin.apis.convert_rae import convert_rae_checkpoint
from decq_plugin.engine.checkpoint import check_checkpoint_keys
from decq_plugin.models.rae_layout import (RAELayoutError, decoder_to_rae,
                                           ditdh_to_rae)
from decq_plugin.registry import MODELS
from decq_plugin.utils.launch import load_config

ROOT = Path(__file__).resolve().parents[2]
STAGE1 = str(ROOT / 'configs/demo/rae_tiny_1xb8-16e_demo-64.py')
TOOL = ROOT / 'tools' / 'convert_rae_checkpoint.py'
_spec = importlib.util.spec_from_file_location('decq_tool_convert', TOOL)
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)
SAMPLE_TOOL = ROOT / 'tools' / 'sample.py'
_spec = importlib.util.spec_from_file_location('decq_tool_sample2',
                                               SAMPLE_TOOL)
sample_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sample_tool)

C, GRID, NCLS = 32, 4, 3
STAGE2_MODEL = dict(
    type='LatentDiffusionModel',
    tokenizer=dict(
        type='RAETokenizer',
        encoder=dict(type='TimmViTEncoder', pretrained=False, input_size=56,
                     model_kwargs=dict(embed_dim=C, depth=2, num_heads=2)),
        decoder=dict(type='ViTPixelDecoder', patch_size=8,
                     arch=dict(width=32, depth=2, num_heads=2, mlp_dim=64)),
        noise_tau=0.0),
    tokenizer_ckpt=None,
    denoiser=dict(type='DiTDH', arch=dict(
        body_width=32, body_depth=2, body_heads=2,
        head_width=48, head_depth=1, head_heads=2)),
    num_classes=NCLS,
    sampler=dict(type='EulerSampler', num_points=3))


def randomize(module, seed, std=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


# -- RAE's definitions, written from its code's equations ---------------------
def mae_sincos(dim, grid):
    """DiT / MAE / RAE table: [column code | row code], each [sin | cos]."""
    w = 1.0 / 10000 ** (np.arange(dim // 4) / (dim / 4))
    rows, cols = np.repeat(np.arange(grid), grid), np.tile(np.arange(grid),
                                                          grid)

    def code(p):
        a = p[:, None] * w
        return np.concatenate([np.sin(a), np.cos(a)], 1)

    return torch.tensor(np.concatenate([code(cols), code(rows)], 1),
                        dtype=torch.float32)


def eva_rope(head_dim, grid):
    """EVA / RAE 2-D RoPE: frequencies repeated pairwise, first half of the
    channels from the row, second from the column."""
    half = head_dim // 2
    f = 1.0 / 10000 ** (np.arange(0, half, 2) / half)
    one = np.repeat(np.arange(grid)[:, None] * f, 2, axis=1)  # [grid, half]
    angle = np.concatenate([np.repeat(one, grid, 0), np.tile(one, (grid, 1))],
                           1)
    return (torch.tensor(np.cos(angle), dtype=torch.float32),
            torch.tensor(np.sin(angle), dtype=torch.float32))


def rotate_half(x):
    x = x.unflatten(-1, (-1, 2))
    return torch.stack([-x[..., 1], x[..., 0]], -1).flatten(-2)


def lin(x, sd, name):
    return F.linear(x, sd[name + '.weight'], sd.get(name + '.bias'))


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


def attention(q, k, v):
    a = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)
    return a @ v


def rae_ddt_block(x, c, sd, p, heads, rope):
    b, n, d = x.shape
    sh1, sc1, g1, sh2, sc2, g2 = lin(F.silu(c), sd,
                                     p + 'adaLN_modulation.1').chunk(6, -1)
    h = rms(x, sd[p + 'norm1.weight']) * (1 + sc1) + sh1
    q, k, v = lin(h, sd, p + 'attn.qkv').reshape(b, n, 3, heads,
                                                 d // heads).permute(
                                                     2, 0, 3, 1, 4)
    cos, sin = rope
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    out = attention(q, k, v).transpose(1, 2).reshape(b, n, d)
    x = x + g1 * lin(out, sd, p + 'attn.proj')
    h = rms(x, sd[p + 'norm2.weight']) * (1 + sc2) + sh2
    a, bb = lin(h, sd, p + 'mlp.w12').chunk(2, -1)
    return x + g2 * lin(F.silu(a) * bb, sd, p + 'mlp.w3')


def rae_ditdh_forward(sd, x, t, y, body_depth, heads):
    """DiTwDDTHead.forward on RAE-layout weights (patch 1)."""
    b, _, g, _ = x.shape
    angle = t[:, None] * sd['t_embedder.W'][None] * 2 * math.pi
    temb = lin(F.silu(lin(torch.cat([angle.sin(), angle.cos()], -1), sd,
                          't_embedder.mlp.0')), sd, 't_embedder.mlp.2')
    c = F.silu(temb + sd['y_embedder.embedding_table.weight'][y])[:, None]
    s = F.conv2d(x, sd['s_embedder.proj.weight'], sd['s_embedder.proj.bias'])
    s = s.flatten(2).transpose(1, 2) + mae_sincos(s.shape[1], g)
    n_blocks = len({k.split('.')[1] for k in sd if k.startswith('blocks.')})
    body_rope = eva_rope(s.shape[-1] // heads[0], g)
    for i in range(body_depth):
        s = rae_ddt_block(s, c, sd, f'blocks.{i}.', heads[0], body_rope)
    s = F.silu(temb[:, None] + s)
    if 's_projector.weight' in sd:
        s = lin(s, sd, 's_projector')
    h = F.conv2d(x, sd['x_embedder.proj.weight'], sd['x_embedder.proj.bias'])
    h = h.flatten(2).transpose(1, 2)
    head_rope = eva_rope(h.shape[-1] // heads[1], g)
    for i in range(body_depth, n_blocks):
        h = rae_ddt_block(h, s, sd, f'blocks.{i}.', heads[1], head_rope)
    shift, scale = lin(F.silu(s), sd,
                       'final_layer.adaLN_modulation.1').chunk(2, -1)
    h = rms(h, sd['final_layer.norm_final.weight']) * (1 + scale) + shift
    out = lin(h, sd, 'final_layer.linear')
    return out.reshape(b, g, g, -1).permute(0, 3, 1, 2)


def rae_decode(sd, z, mean, var, grid, patch, heads):
    """RAE.decode: de-normalise, GeneralDecoder (CLS first, HF ViT-MAE
    layers, LayerNorm eps 1e-12), drop CLS, unpatchify, x * std + mean."""
    z = z * torch.sqrt(var + 1e-5) + mean
    b, c = z.shape[:2]
    x = lin(z.flatten(2).transpose(1, 2), sd, 'decoder_embed')
    width = x.shape[-1]
    pos = torch.cat([torch.zeros(1, width), mae_sincos(width, grid)])
    x = torch.cat([sd['trainable_cls_token'].expand(b, -1, -1), x], 1) + pos
    n_layers = len({k.split('.')[1] for k in sd
                    if k.startswith('decoder_layers.')})

    def ln(t, name):
        return F.layer_norm(t, (width, ), sd[name + '.weight'],
                            sd[name + '.bias'], eps=1e-12)

    for i in range(n_layers):
        p = f'decoder_layers.{i}.'
        h = ln(x, p + 'layernorm_before')
        q, k, v = (lin(h, sd, p + f'attention.attention.{n}').unflatten(
            -1, (heads, -1)).transpose(1, 2) for n in ('query', 'key',
                                                       'value'))
        ctx = attention(q, k, v).transpose(1, 2).flatten(2)
        x = x + lin(ctx, sd, p + 'attention.output.dense')
        h = F.gelu(lin(ln(x, p + 'layernorm_after'), sd,
                       p + 'intermediate.dense'))
        x = x + lin(h, sd, p + 'output.dense')
    logits = lin(ln(x, 'decoder_norm'), sd, 'decoder_pred')[:, 1:]
    img = logits.reshape(b, grid, grid, patch, patch, 3)
    img = torch.einsum('nhwpqc->nchpwq', img).reshape(b, 3, grid * patch,
                                                      grid * patch)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    mu = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    return img * std + mu


# -- fixtures -------------------------------------------------------------------
def _rae_stats(shape, seed=5):
    g = torch.Generator().manual_seed(seed)
    return {'mean': torch.randn(shape, generator=g) * 0.3,
            'var': torch.rand(shape, generator=g) + 0.5}


@pytest.fixture(scope='module')
def stage2(tmp_path_factory):
    """RAE-layout decoder / DiT-DH / statistics files made from a tiny
    model of this package, and the converted stage-2 checkpoint."""
    root = tmp_path_factory.mktemp('rae')
    config = root / 'tiny_ldm_rae.py'
    config.write_text(f'model = {STAGE2_MODEL!r}\n')
    init_default_scope('decq_plugin')
    torch.manual_seed(0)
    source = MODELS.build(load_config(str(config)).model).eval()
    randomize(source.denoiser, 1)
    randomize(source.tokenizer.decoder, 2, std=0.05)
    files = {'dit': root / 'stage2_model.pt', 'decoder': root / 'model.pt',
             'stats': root / 'stat.pt'}
    dit_sd = ditdh_to_rae(source.denoiser)
    dec_sd = decoder_to_rae(source.tokenizer.decoder)
    stats = _rae_stats((C, GRID, GRID))
    torch.save({'ema': dit_sd, 'model': {}}, files['dit'])  # training ckpt
    torch.save(dec_sd, files['decoder'])
    torch.save(stats, files['stats'])
    out = root / 'converted.pth'
    tool.main([str(config), '--out', str(out), '--random-vfm',
               *[f'--{k}={v}' for k, v in files.items()]])
    return dict(root=root, config=str(config), source=source, out=str(out),
                dit_sd=dit_sd, dec_sd=dec_sd, stats=stats, files=files)


# -- layouts ----------------------------------------------------------------------
def test_exported_fixed_tables_are_raes(stage2):
    dit = stage2['source'].denoiser
    torch.testing.assert_close(stage2['dit_sd']['pos_embed'][0],
                               mae_sincos(32, GRID))
    for part, width, heads in (('enc', 32, 2), ('dec', 48, 2)):
        cos, sin = eva_rope(width // heads, GRID)
        torch.testing.assert_close(
            stage2['dit_sd'][f'{part}_feat_rope.freqs_cos'], cos)
        torch.testing.assert_close(
            stage2['dit_sd'][f'{part}_feat_rope.freqs_sin'], sin)
    assert stage2['dit_sd']['s_embedder.proj.weight'].shape == (32, C, 1, 1)
    assert dit.patch_in.weight.shape == (32, C)
    assert stage2['dec_sd']['decoder_pos_embed'].shape == (1, 17, 32)


# -- stage 2: the DiT-DH, sampling ------------------------------------------------
def test_converted_dit_round_trips_and_computes_raes_velocity(stage2):
    model = build_model_from_config(stage2['config'], stage2['out'])
    source = stage2['source']
    for key, value in source.state_dict().items():
        if key.startswith(('denoiser.', 'tokenizer.decoder.')):
            assert torch.equal(model.state_dict()[key], value), key
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, C, GRID, GRID, generator=g)
    t, y = torch.tensor([0.3, 0.9]), torch.tensor([1, NCLS])  # NCLS: null
    with torch.no_grad():
        ours = model.denoiser({'patch': x}, t, y)['patch']
        ref = rae_ditdh_forward(stage2['dit_sd'], x, t, y, 2, (2, 2))
    assert ours.abs().max() > 1e-3
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)


def test_converted_decoder_and_stats_decode_as_rae(stage2):
    model = build_model_from_config(stage2['config'], stage2['out'])
    stats = stage2['stats']
    norm = model.tokenizer.normalizer
    assert bool(norm.enabled)
    torch.testing.assert_close(norm.patch_mean, stats['mean'])
    z = torch.randn(2, C, GRID, GRID, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model.tokenizer.decode({'patch': z}, clamp=False)
        ref = rae_decode(stage2['dec_sd'], z, stats['mean'], stats['var'],
                         GRID, 8, 2)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)


def test_tools_sample_loads_the_converted_checkpoint(stage2):
    out_dir = stage2['root'] / 'samples'
    result = sample_tool.main([stage2['config'], stage2['out'], '--out-dir',
                               str(out_dir), '--num-per-class', '1',
                               '--no-png'])
    assert result['shape'] == (NCLS, 32, 32, 3)


def test_safetensors_input(stage2, tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in stage2['dit_sd'].items()},
              str(path))
    out = tmp_path / 'dit.pth'
    convert_rae_checkpoint(stage2['config'], str(out), dit=str(path),
                           pretrained_vfm=False)
    a = torch.load(out, weights_only=True)['state_dict']
    b = torch.load(stage2['out'], weights_only=True)['state_dict']
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith('denoiser'))


# -- stage 1: the tokenizer through a shipped config --------------------------------
def test_stage1_config_tokenizer_checkpoint(tmp_path):
    init_default_scope('decq_plugin')
    cfg = load_config(STAGE1)
    torch.manual_seed(0)
    tok = MODELS.build(cfg.model.tokenizer)
    randomize(tok.decoder, 4, std=0.05)
    dec_sd = decoder_to_rae(tok.decoder)
    shape = tok.latent_shapes['patch']
    stats = _rae_stats(shape, seed=6)
    torch.save(dec_sd, tmp_path / 'model.pt')
    torch.save(stats, tmp_path / 'stat.pt')
    out = str(tmp_path / 'tokenizer.pth')
    convert_rae_checkpoint(STAGE1, out, decoder=str(tmp_path / 'model.pt'),
                           stats=str(tmp_path / 'stat.pt'),
                           pretrained_vfm=False)
    # What tools/test.py checks before it runs the test loop, with the
    # documented --cfg-options that drop the training-only parts.
    eval_options = {'model.perceptual_loss': None,
                    'model.discriminator': None}
    check_checkpoint_keys(
        MODELS.build(load_config(STAGE1, eval_options).model), out)
    loaded = build_tokenizer_from_config(STAGE1, out)
    z = torch.randn((2, ) + tuple(shape),
                    generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = loaded.decode({'patch': z}, clamp=False)
    ref = rae_decode(dec_sd, z, stats['mean'], stats['var'], shape[-1], 16,
                     tok.decoder.blocks[0].attn.num_heads)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)


# -- refusals -----------------------------------------------------------------------
def _refused(stage2, tmp_path, state, match, kind='dit'):
    path = tmp_path / 'bad.pt'
    torch.save(state, path)
    with pytest.raises(RAELayoutError, match=match):
        convert_rae_checkpoint(stage2['config'], str(tmp_path / 'o.pth'),
                               pretrained_vfm=False, **{kind: str(path)})


def test_refuses_unknown_keys_naming_them(stage2, tmp_path):
    state = dict(stage2['dit_sd'])
    state['blocks.0.attn.q_norm.weight'] = torch.ones(16)
    _refused(stage2, tmp_path, state, r'blocks\.0\.attn\.q_norm\.weight')
    dec = dict(stage2['dec_sd'], mask_token=torch.zeros(1, 1, 32))
    _refused(stage2, tmp_path, dec, 'mask_token', kind='decoder')
    _refused(stage2, tmp_path, {'foo': torch.ones(1), 'bar.weight':
                                torch.ones(1)}, "'foo'")


def test_refuses_files_that_do_not_fit(stage2, tmp_path):
    state = dict(stage2['dit_sd'])
    state.pop('blocks.2.mlp.w3.bias')  # the head block
    _refused(stage2, tmp_path, state, r'head_blocks\.0\.mlp\.w_out\.bias')
    # A row-first sin-cos table (this package's earlier layout) is refused.
    old = dict(stage2['dit_sd'])
    half = old['pos_embed'].shape[-1] // 2
    old['pos_embed'] = torch.cat([old['pos_embed'][..., half:],
                                  old['pos_embed'][..., :half]], -1)
    _refused(stage2, tmp_path, old, 'pos_embed')
    _refused(stage2, tmp_path, stage2['dec_sd'], 'decoder file, given as',
             kind='dit')


def test_refuses_pickled_objects(stage2, tmp_path):
    _refused(stage2, tmp_path, {'x': argparse.Namespace(a=1)}, 'weights_only')


def test_cli_names_the_keys(stage2, tmp_path, capsys):
    path = tmp_path / 'bad.pt'
    torch.save({'decoder_embed.weight': torch.ones(2, 2),
                'decoder_unknown': torch.ones(1)}, path)
    with pytest.raises(SystemExit, match='decoder_unknown'):
        tool.main([stage2['config'], '--out', str(tmp_path / 'o.pth'),
                   '--decoder', str(path), '--random-vfm'])


# -- what users trip on -------------------------------------------------------
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_files_convert(stage2, tmp_path, dtype):
    """RAE's extract_decoder.py --dtype fp16|bf16 files: the fixed tables
    are compared at the file's precision, the weights are taken as cast."""
    half = {k: v.to(dtype) for k, v in stage2['dec_sd'].items()}
    dit = {k: v.to(dtype) for k, v in stage2['dit_sd'].items()}
    torch.save(half, tmp_path / 'model.pt')
    torch.save(dit, tmp_path / 'dit.pt')
    out = tmp_path / 'half.pth'
    convert_rae_checkpoint(stage2['config'], str(out),
                           decoder=str(tmp_path / 'model.pt'),
                           dit=str(tmp_path / 'dit.pt'), pretrained_vfm=False)
    state = torch.load(out, weights_only=True)['state_dict']
    assert torch.equal(state['tokenizer.decoder.cls_token'],
                       half['trainable_cls_token'].float())
    assert torch.equal(state['denoiser.t_embedder.freqs'],
                       dit['t_embedder.W'].float())


def test_table_refusal_names_the_cause(stage2, tmp_path):
    dec = dict(stage2['dec_sd'])
    dec['decoder_pos_embed'] = dec['decoder_pos_embed'] * 1.5
    _refused(stage2, tmp_path, dec, r'differs .* by up to .*position layout',
             kind='decoder')
    dec['decoder_pos_embed'] = dec['decoder_pos_embed'][:, :5]
    _refused(stage2, tmp_path, dec, r'has shape \(1, 5, 32\).*another grid',
             kind='decoder')


def test_stage1_conversion_builds_no_training_only_parts(tmp_path):
    """Offline, the LPIPS VGG trunk and the discriminator's weights cannot
    be had; conversion never uses them and must not ask for them."""
    init_default_scope('decq_plugin')
    tok = MODELS.build(load_config(STAGE1).model.tokenizer)
    torch.save(decoder_to_rae(randomize(tok.decoder, 4)), tmp_path / 'm.pt')
    out = tmp_path / 'tok.pth'
    options = {'model.perceptual_loss.net': 'vgg',
               'model.perceptual_loss.pretrained_trunk': True,
               'model.discriminator.pretrained': True}
    result = convert_rae_checkpoint(STAGE1, str(out),
                                    decoder=str(tmp_path / 'm.pt'),
                                    pretrained_vfm=False, cfg_options=options)
    keys = torch.load(out, weights_only=True)['state_dict']
    assert keys and all(k.startswith('tokenizer.') for k in keys)
    assert result['saved'] == ['tokenizer']


def test_dit_only_conversion_needs_no_vfm_weights(stage2, tmp_path):
    """A pretrained VFM that cannot be had offline is not asked for when
    the output is the DiT-DH only; the checkpoint holds the DiT-DH."""
    out = tmp_path / 'dit.pth'
    options = {'model.tokenizer.encoder.pretrained': True}
    result = convert_rae_checkpoint(stage2['config'], str(out),
                                    dit=str(stage2['files']['dit']),
                                    cfg_options=options)
    keys = torch.load(out, weights_only=True)['state_dict']
    assert keys and all(k.startswith('denoiser.') for k in keys)
    assert result['saved'] == ['denoiser']


def test_says_which_weights_were_taken(stage2, tmp_path, capsys):
    path = tmp_path / 'train.pt'
    torch.save({'model': stage2['dit_sd']}, path)  # no 'ema'
    out = tmp_path / 'o.pth'
    result = tool.main([stage2['config'], '--out', str(out), '--dit',
                        str(path), '--random-vfm'])
    assert "no 'ema'" in result['weights']['denoiser']
    printed = capsys.readouterr().out
    assert "raw weights ('model'): the file has no 'ema'" in printed
    meta = torch.load(out, weights_only=True)['meta']
    assert "no 'ema'" in meta['rae_weights_taken']['denoiser']


def test_rae_stage1_training_checkpoint_gives_its_decoder(stage2, tmp_path):
    """RAE's stage-1 training checkpoint: {'model': ..., 'ema': ...} of the
    whole RAE module (encoder.* VFM, decoder.* GeneralDecoder)."""
    ema = {f'decoder.{k}': v for k, v in stage2['dec_sd'].items()}
    ema['encoder.model.cls_token'] = torch.zeros(1, 1, C)
    path = tmp_path / 'ep-0016.pt'
    torch.save({'model': {k: v * 0 for k, v in ema.items()}, 'ema': ema,
                'optimizer': {}}, path)
    out = tmp_path / 'o.pth'
    result = convert_rae_checkpoint(stage2['config'], str(out),
                                    decoder=str(path), pretrained_vfm=False)
    assert 'stage-1' in result['weights']['decoder']
    state = torch.load(out, weights_only=True)['state_dict']
    assert torch.equal(state['tokenizer.decoder.cls_token'],
                       stage2['dec_sd']['trainable_cls_token'])
    # A training checkpoint without any decoder says what to give instead.
    torch.save({'ema': {'encoder.model.cls_token': torch.zeros(1)}}, path)
    with pytest.raises(RAELayoutError, match='extract_decoder.py'):
        convert_rae_checkpoint(stage2['config'], str(out),
                               decoder=str(path), pretrained_vfm=False)


def test_wrong_shape_statistics_named_not_a_traceback(stage2, tmp_path,
                                                      capsys):
    path = tmp_path / 'stat.pt'
    torch.save(_rae_stats((C, GRID + 1, GRID + 1)), path)
    with pytest.raises(SystemExit) as exit_info:
        tool.main([stage2['config'], '--out', str(tmp_path / 'o.pth'),
                   '--stats', str(path), '--random-vfm'])
    message = str(exit_info.value.code)
    assert 'stat.pt' in message and '(32, 5, 5)' in message
    assert 'does not fit the latents' in message


def test_file_errors_come_before_any_model_is_built(stage2, tmp_path,
                                                    monkeypatch):
    from decq_plugin.apis import convert_rae

    def no_build(cfg):
        raise AssertionError('a model was built before the files were read')

    monkeypatch.setattr(convert_rae.MODELS, 'build', no_build)
    good = str(stage2['files']['decoder'])
    with pytest.raises(FileNotFoundError, match='missing.pt'):
        convert_rae_checkpoint(stage2['config'], str(tmp_path / 'o.pth'),
                               decoder=good,
                               dit=str(tmp_path / 'missing.pt'))
    torch.save({'foo': torch.ones(1)}, tmp_path / 'bad.pt')
    with pytest.raises(RAELayoutError, match='none of its keys'):
        convert_rae_checkpoint(stage2['config'], str(tmp_path / 'o.pth'),
                               decoder=good, guide=str(tmp_path / 'bad.pt'))


@pytest.mark.parametrize('suffix', ['.pt', '.safetensors'])
def test_truncated_file_is_named(stage2, tmp_path, suffix, capsys):
    """A half-downloaded decoder file: the message names the file and what
    is wrong, not torch's PytorchStreamReader error."""
    path = tmp_path / f'model{suffix}'
    if suffix == '.pt':
        torch.save(stage2['dec_sd'], path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in stage2['dec_sd'].items()},
                  str(path))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(SystemExit) as exit_info:
        tool.main([stage2['config'], '--out', str(tmp_path / 'o.pth'),
                   '--decoder', str(path), '--random-vfm'])
    message = str(exit_info.value.code)
    assert str(path) in message and 'truncated' in message
    assert 'Traceback' not in capsys.readouterr().err


def test_converted_tokenizer_starts_decq(tmp_path):
    """README: DecQ starts from a converted RAE tokenizer with
    load_from=... allow_partial_load_from=True: every key they share fits
    (the ResumableCheckpointHook check), the decoder blocks come over."""
    from decq_plugin.engine.checkpoint import check_state_fit
    init_default_scope('decq_plugin')
    tok = MODELS.build(load_config(STAGE1).model.tokenizer)
    torch.save(decoder_to_rae(randomize(tok.decoder, 4)), tmp_path / 'm.pt')
    out = str(tmp_path / 'tokenizer.pth')
    convert_rae_checkpoint(STAGE1, out, decoder=str(tmp_path / 'm.pt'),
                           pretrained_vfm=False)
    decq = MODELS.build(load_config(
        str(ROOT / 'configs/demo/decq_tiny_1xb8-16e_demo-64.py')).model)
    state = torch.load(out, weights_only=True)['state_dict']
    missing, unexpected = check_state_fit(decq, decq.state_dict(), state,
                                          out, strict=False)
    assert not unexpected and any('query' in k for k in missing)
    decq.load_state_dict(state, strict=False)
    assert torch.equal(decq.tokenizer.decoder.blocks[0].attn.q.weight,
                       tok.decoder.blocks[0].attn.q.weight)
