"""diffusers' AutoencoderRAE, both ways, against the real packages: a small
AutoencoderRAE built by diffusers itself (random weights, offline) converts
into this package's tokenizer with equal encoder features, latents and
decoded pixels, and an RAE tokenizer trained here is written as a folder
that ``AutoencoderRAE.from_pretrained`` loads with equal encode / decode.
Skipped, with the reason, where the ``interop`` extra is not installed."""
import json
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip(
    'diffusers', reason='needs the interop extra: pip install -e ".[interop]"')
pytest.importorskip(
    'transformers',
    reason='needs the interop extra: pip install -e ".[interop]"')

from mmengine.registry import init_default_scope  # noqa: E402

from decq_plugin.apis import (build_tokenizer_from_config,  # noqa: E402
                              convert_diffusers_rae, export_diffusers,
                              import_diffusers_rae)
from decq_plugin.apis.diffusers_format import (  # noqa: E402
    DiffusersFormatError, read_diffusers_folder)
from decq_plugin.models.diffusers_layout import (  # noqa: E402
    positions_for_resampling, resample_positions)
from decq_plugin.registry import MODELS  # noqa: E402

from tiny_models import ROOT, load_tool  # noqa: E402

TOOL, EXPORT_TOOL = 'convert_rae_checkpoint', 'export'  # under tools/
# 16x16 latents of width 64 (DINOv2 at 224 px), 32 px images: diffusers'
# decoder table equals RAE's on a 16x16 grid only.
C, INPUT, GRID, PATCH = 64, 224, 16, 2
TOKENIZER = dict(
    type='RAETokenizer',
    encoder=dict(type='TimmViTEncoder',
                 model_name='vit_base_patch14_reg4_dinov2',
                 input_size=INPUT, pretrained=True, weights_path=None,
                 model_kwargs=dict(embed_dim=C, depth=2, num_heads=1)),
    decoder=dict(type='ViTPixelDecoder', patch_size=PATCH,
                 arch=dict(width=32, depth=2, num_heads=2, mlp_dim=64)),
    noise_tau=0.0,
    latent_stats=None)
DIFFUSERS_CONFIG = dict(
    encoder_hidden_size=C, encoder_patch_size=14, encoder_num_hidden_layers=2,
    decoder_hidden_size=32, decoder_num_hidden_layers=2,
    decoder_num_attention_heads=2, decoder_intermediate_size=64,
    patch_size=PATCH, encoder_input_size=INPUT)


def _from_pretrained(folder: str):
    """``AutoencoderRAE.from_pretrained`` (without accelerate's loader)."""
    return diffusers.AutoencoderRAE.from_pretrained(
        folder, low_cpu_mem_usage=False).eval()


def _randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1
                    + (1.0 if 'norm' in name and name.endswith('weight')
                       else 0.0))


def _images(n: int = 2, side: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, side, side,
                      generator=torch.Generator().manual_seed(11))


def _config_file(tmp_path: Path, kind: str = 'AutoencoderModel') -> str:
    model = (dict(type='AutoencoderModel', tokenizer=TOKENIZER,
                  perceptual_loss=dict(type='LPIPSLoss', net='vgg'),
                  discriminator=None) if kind == 'AutoencoderModel'
             else dict(TOKENIZER))
    path = tmp_path / f'tiny_rae_{kind}.py'
    path.write_text(f'model = {model!r}\n')
    return str(path)


@pytest.fixture(scope='module')
def hub_folder(tmp_path_factory):
    """A small AutoencoderRAE in the Hub's layout, written by diffusers."""
    root = tmp_path_factory.mktemp('hub')
    g = torch.Generator().manual_seed(3)
    shape = (C, GRID, GRID)
    torch.manual_seed(0)
    model = diffusers.AutoencoderRAE(
        **DIFFUSERS_CONFIG,
        latents_mean=(torch.randn(shape, generator=g) * 0.2).tolist(),
        latents_std=(torch.rand(shape, generator=g) + 0.5).tolist(),
        scaling_factor=0.8)
    _randomize(model, 1)
    model.save_pretrained(str(root / 'folder'))
    return dict(folder=str(root / 'folder'),
                model=_from_pretrained(str(root / 'folder')))


def _hf_features(model, images: torch.Tensor) -> torch.Tensor:
    """AutoencoderRAE's encoder patch tokens [B, N, C]."""
    x = model._resize_and_normalize(images)
    return model._encoder_forward_fn(model.encoder, x)


def _assert_same(tokenizer, model) -> None:
    images = _images()
    with torch.no_grad():
        ours_features = tokenizer.encoder(images)
        ref_features = _hf_features(model, images)
        torch.testing.assert_close(ours_features, ref_features, atol=2e-5,
                                   rtol=1e-4)
        z = tokenizer.encode(images)['patch']
        ref_z = model.encode(images).latent
        torch.testing.assert_close(z, ref_z, atol=5e-5, rtol=1e-4)
        assert z.abs().max() > 0.1
        ours = tokenizer.decode({'patch': ref_z}, clamp=False)
        ref = model.decode(ref_z).sample
        torch.testing.assert_close(ours, ref, atol=5e-5, rtol=1e-4)


# -- import ------------------------------------------------------------------
def test_hub_folder_converts_with_equal_outputs(hub_folder, tmp_path):
    config = _config_file(tmp_path)
    out = tmp_path / 'rae' / 'tokenizer.pth'
    result = convert_diffusers_rae(config, hub_folder['folder'], str(out))
    assert result['saved'] == ['tokenizer']
    # The stage-1 config's LPIPS (VGG trunk) was not built: offline it
    # would need a download.
    tokenizer = build_tokenizer_from_config(config, str(out))
    _assert_same(tokenizer, hub_folder['model'])


def test_side_files_serve_the_configs(hub_folder, tmp_path):
    """vfm.safetensors is a timm weights_path; latent_stats.pth a config's
    latent_stats: a tokenizer built from them encodes as diffusers does."""
    files = import_diffusers_rae(hub_folder['folder'], str(tmp_path))
    init_default_scope('decq_plugin')
    cfg = dict(TOKENIZER, latent_stats=files['stats'])
    cfg['encoder'] = dict(cfg['encoder'], weights_path=files['vfm'])
    tokenizer = MODELS.build(cfg).eval()
    images = _images()
    with torch.no_grad():
        torch.testing.assert_close(
            tokenizer.encode(images)['patch'],
            hub_folder['model'].encode(images).latent, atol=5e-5, rtol=1e-4)
    stats = torch.load(files['stats'], weights_only=True)
    assert set(stats) == {'patch_mean', 'patch_var'}


def test_cli_takes_the_folder(hub_folder, tmp_path, capsys):
    tool = load_tool(TOOL, 'decq_tool_convert_diffusers')
    out = tmp_path / 'tok.pth'
    tool.main([_config_file(tmp_path), '--diffusers', hub_folder['folder'],
               '--out', str(out)])
    printed = capsys.readouterr().out
    assert 'vfm.safetensors' in printed and out.is_file()


def test_bad_folders_are_named(hub_folder, tmp_path):
    folder = tmp_path / 'broken'
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match='config.json'):
        read_diffusers_folder(str(folder))
    src = Path(hub_folder['folder'])
    (folder / 'config.json').write_text('{"encoder_type": ')
    data = (src / 'diffusion_pytorch_model.safetensors').read_bytes()
    (folder / 'diffusion_pytorch_model.safetensors').write_bytes(
        data[:len(data) // 2])
    with pytest.raises(DiffusersFormatError, match='config.json.*JSON'):
        read_diffusers_folder(str(folder))
    config = json.loads((src / 'config.json').read_text())
    (folder / 'config.json').write_text(json.dumps(config))
    with pytest.raises(DiffusersFormatError, match='truncated'):
        read_diffusers_folder(str(folder))
    (folder / 'config.json').write_text(
        json.dumps(dict(config, encoder_type='siglip2')))
    with pytest.raises(DiffusersFormatError, match="'siglip2'"):
        read_diffusers_folder(str(folder))


# -- export ------------------------------------------------------------------
@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A tokenizer checkpoint of this package with random weights and
    statistics, as tools/train.py + compute_latent_stats.py write them."""
    root = tmp_path_factory.mktemp('trained')
    init_default_scope('decq_plugin')
    torch.manual_seed(0)
    cfg = dict(TOKENIZER)
    cfg['encoder'] = dict(cfg['encoder'], pretrained=False)
    tokenizer = MODELS.build(cfg)
    _randomize(tokenizer, 5)
    g = torch.Generator().manual_seed(6)
    tokenizer.normalizer.set_stats({
        'patch_mean': torch.randn(C, GRID, GRID, generator=g) * 0.2,
        'patch_var': torch.rand(C, GRID, GRID, generator=g) + 0.3})
    state = {f'tokenizer.{k}': v for k, v in tokenizer.state_dict().items()}
    ckpt = root / 'epoch_1.pth'
    torch.save({'state_dict': state, 'meta': {}}, ckpt)
    return dict(root=root, tokenizer=tokenizer.eval(), ckpt=str(ckpt))


def test_export_loads_in_diffusers_with_equal_outputs(trained, tmp_path):
    config = _config_file(tmp_path)
    out = tmp_path / 'diffusers'
    tool = load_tool(EXPORT_TOOL, 'decq_tool_export_diffusers')
    tool.main([config, trained['ckpt'], str(out), '--format', 'diffusers'])
    model = _from_pretrained(str(out))
    _assert_same(trained['tokenizer'], model)


def test_round_trip_through_diffusers(trained, tmp_path):
    """Export, then import with the converter: the same tokenizer."""
    config = _config_file(tmp_path)
    export_diffusers(config, trained['ckpt'], str(tmp_path / 'folder'))
    out = tmp_path / 'back' / 'tok.pth'
    convert_diffusers_rae(config, str(tmp_path / 'folder'), str(out))
    back = build_tokenizer_from_config(config, str(out))
    images = _images()
    with torch.no_grad():
        a = trained['tokenizer'].encode(images)['patch']
        b = back.encode(images)['patch']
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-4)
        torch.testing.assert_close(
            trained['tokenizer'].decode({'patch': a}, clamp=False),
            back.decode({'patch': a}, clamp=False), atol=5e-5, rtol=1e-4)


def test_decq_tokenizer_is_refused(tmp_path):
    config = ROOT / 'configs/demo/decq_tiny_1xb8-16e_demo-64.py'
    if not config.is_file():
        config = next((ROOT / 'configs/demo').glob('decq_tiny_*.py'))
    with pytest.raises(DiffusersFormatError, match='DecQTokenizer.*own'):
        export_diffusers(str(config), str(tmp_path / 'none.pth'),
                         str(tmp_path / 'out'))
    tool = load_tool(EXPORT_TOOL, 'decq_tool_export_refuse')
    with pytest.raises(SystemExit, match='DecQTokenizer'):
        tool.main([str(config), str(config), str(tmp_path / 'o'),
                   '--format', 'diffusers'])


def test_positions_are_exact_both_ways():
    """The 37x37 table written for transformers resamples to the timm
    grid (transformers' own resampling at run time)."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(GRID * GRID, 8, generator=g)
    wide = positions_for_resampling(table, 37)
    assert wide.shape == (37 * 37, 8)
    torch.testing.assert_close(resample_positions(wide, GRID), table,
                               atol=1e-5, rtol=1e-5)


def test_other_grids_are_refused(tmp_path):
    """diffusers rescales its decoder positions on grids other than 16x16:
    such an export would decode differently, so it is refused."""
    from decq_plugin.apis import save_diffusers
    init_default_scope('decq_plugin')
    cfg = dict(TOKENIZER, decoder=dict(TOKENIZER['decoder'], patch_size=8))
    cfg['encoder'] = dict(cfg['encoder'], input_size=56, pretrained=False)
    with pytest.raises(DiffusersFormatError, match='grid is 4x4'):
        save_diffusers(MODELS.build(cfg), str(tmp_path))


def test_transformers_4_key_names_convert(hub_folder, tmp_path):
    """Folders saved with transformers 4 name the encoder attention
    attention.attention.{query,key,value} / attention.output.dense."""
    from safetensors.torch import load_file, save_file
    src = Path(hub_folder['folder'])
    old = {'q_proj': 'attention.query', 'k_proj': 'attention.key',
           'v_proj': 'attention.value', 'o_proj': 'output.dense'}
    state = {}
    for key, value in load_file(
            str(src / 'diffusion_pytorch_model.safetensors')).items():
        for new, name in old.items():
            key = key.replace(f'.attention.{new}.', f'.attention.{name}.')
        state[key] = value
    assert any('.attention.attention.query.' in k for k in state)
    folder = tmp_path / 'v4'
    folder.mkdir()
    save_file(state, str(folder / 'diffusion_pytorch_model.safetensors'))
    (folder / 'config.json').write_text((src / 'config.json').read_text())
    config = _config_file(tmp_path)
    out = tmp_path / 'tok.pth'
    convert_diffusers_rae(config, str(folder), str(out))
    _assert_same(build_tokenizer_from_config(config, str(out)),
                 hub_folder['model'])


def _copy_folder(src: str, dst: Path, change) -> str:
    """``src`` with its weights passed through ``change(state)``."""
    from safetensors.torch import load_file, save_file
    src = Path(src)
    dst.mkdir()
    state = load_file(str(src / 'diffusion_pytorch_model.safetensors'))
    save_file(change(dict(state)),
              str(dst / 'diffusion_pytorch_model.safetensors'))
    (dst / 'config.json').write_text((src / 'config.json').read_text())
    return str(dst)


def test_stored_decoder_table_is_checked_and_stats_fall_back(hub_folder,
                                                             tmp_path):
    """A folder may store decoder.decoder_pos_embed (diffusers ignores
    it): RAE's table converts, another is refused naming it. Without the
    _latents_* weights the config.json lists give the statistics."""
    table = hub_folder['model'].decoder.decoder_pos_embed.clone()

    def with_table(scale):
        def change(state):
            state['decoder.decoder_pos_embed'] = table * scale
            state.pop('_latents_mean')
            state.pop('_latents_std')
            return state
        return change

    config = _config_file(tmp_path)
    good = _copy_folder(hub_folder['folder'], tmp_path / 'good',
                        with_table(1.0))
    out = tmp_path / 'ok' / 'tok.pth'
    convert_diffusers_rae(config, good, str(out))
    _assert_same(build_tokenizer_from_config(config, str(out)),
                 hub_folder['model'])
    bad = _copy_folder(hub_folder['folder'], tmp_path / 'bad',
                       with_table(2.0))
    tool = load_tool(TOOL, 'decq_tool_convert_table')
    with pytest.raises(SystemExit, match="'decoder_pos_embed'.*differs"):
        tool.main([config, '--diffusers', bad, '--out',
                   str(tmp_path / 'no' / 'tok.pth')])


def test_cli_names_a_broken_folder(hub_folder, tmp_path):
    folder = tmp_path / 'broken'
    folder.mkdir()
    (folder / 'config.json').write_text('{"encoder_type": ')
    (folder / 'diffusion_pytorch_model.safetensors').write_bytes(b'')
    tool = load_tool(TOOL, 'decq_tool_convert_broken')
    with pytest.raises(SystemExit, match=r'config\.json.*not valid JSON'):
        tool.main([_config_file(tmp_path), '--diffusers', str(folder),
                   '--out', str(tmp_path / 'o.pth')])


def test_export_refuses_parts_it_cannot_write(trained, tmp_path):
    tool = load_tool(EXPORT_TOOL, 'decq_tool_export_parts')
    with pytest.raises(SystemExit, match='--part denoiser'):
        tool.main([_config_file(tmp_path), trained['ckpt'],
                   str(tmp_path / 'o'), '--format', 'diffusers', '--part',
                   'denoiser'])


def test_diffusers_file_as_decoder_says_use_the_folder(hub_folder, tmp_path):
    tool = load_tool(TOOL, 'decq_tool_convert_as_decoder')
    weights = Path(hub_folder['folder'], 'diffusion_pytorch_model.safetensors')
    with pytest.raises(SystemExit, match='--diffusers FOLDER'):
        tool.main([_config_file(tmp_path), '--decoder', str(weights),
                   '--out', str(tmp_path / 'o.pth'), '--random-vfm'])


def test_missing_dit_is_named_before_anything_is_written(hub_folder,
                                                         tmp_path):
    out = tmp_path / 'gen' / 'rae_dit.pth'
    with pytest.raises(FileNotFoundError, match='stage2_model.pt'):
        convert_diffusers_rae(_config_file(tmp_path), hub_folder['folder'],
                              str(out), dit=str(tmp_path / 'stage2_model.pt'))
    assert not (tmp_path / 'gen').exists()


def test_generator_from_the_folder_and_a_dit_file(hub_folder, tmp_path):
    """README: a stage-2 config filled from the Hub folder (tokenizer) and
    RAE's DiT-DH file, in one checkpoint that loads strictly."""
    from decq_plugin.apis import build_model_from_config
    from decq_plugin.models.rae_layout import ditdh_to_rae
    # As the shipped stage-2 configs: the VFM comes from the checkpoint.
    tokenizer = dict(TOKENIZER, encoder=dict(TOKENIZER['encoder'],
                                             pretrained=False))
    model = dict(type='LatentDiffusionModel', tokenizer=tokenizer,
                 tokenizer_ckpt=None, num_classes=3,
                 denoiser=dict(type='DiTDH', arch=dict(
                     body_width=32, body_depth=1, body_heads=2,
                     head_width=32, head_depth=1, head_heads=2)),
                 sampler=dict(type='EulerSampler', num_points=2))
    config = tmp_path / 'tiny_ldm.py'
    config.write_text(f'model = {model!r}\n')
    init_default_scope('decq_plugin')
    source = MODELS.build(model)
    _randomize(source.denoiser, 9)
    torch.save({'ema': ditdh_to_rae(source.denoiser)}, tmp_path / 'dit.pt')
    out = tmp_path / 'gen' / 'rae_dit.pth'
    tool = load_tool(TOOL, 'decq_tool_convert_generator')
    result = tool.main([str(config), '--diffusers', hub_folder['folder'],
                        '--dit', str(tmp_path / 'dit.pt'), '--out',
                        str(out)])
    assert result['saved'] == ['tokenizer', 'denoiser']
    built = build_model_from_config(str(config), str(out))
    for key, value in source.denoiser.state_dict().items():
        assert torch.equal(built.denoiser.state_dict()[key], value), key
    _assert_same(built.tokenizer, hub_folder['model'])
