"""tools/analysis/get_flops.py and decq_plugin/utils/flops.py: per-part
parameters and FLOPs of tiny tokenizers against hand counts (attention
included), the DiT-DH costs, the overhead table and the command line."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from decq_plugin.registry import MODELS
from decq_plugin.utils.flops import count_flops, denoiser_costs

ROOT = Path(__file__).resolve().parents[2]
DEMO_DECQ = str(ROOT / 'configs/demo/decq_tiny_1xb8-16e_demo-64.py')
DEMO_RAE = str(ROOT / 'configs/demo/rae_tiny_1xb8-16e_demo-64.py')


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'decq_tool_get_flops', ROOT / 'tools' / 'analysis' / 'get_flops.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()

# The tiny demo tokenizers: VFM width 96, 12 blocks, MLP 384, 56 px input
# -> 4x4 patches (+ CLS + 4 registers); decoder width 128, 4 blocks, MLP
# 512, patch 16 (64 px); DecQ: 8 queries, condensers on blocks 0, 3, 6, 9.
D, P, Q, W, MLP_DEC = 96, 16, 8, 128, 512


def _vit_block(tokens: int, width: int, mlp: int) -> int:
    """qkv + proj + MLP matmuls and the two attention products."""
    return (2 * tokens * width * (3 * width + width + 2 * mlp) +
            2 * 2 * tokens * tokens * width)


VFM = 2 * P * D * 3 * 14 * 14 + 12 * _vit_block(P + 5, D, 4 * D)
# Per condenser: q, kv (on the 16 patch tokens), attention, proj, MLP.
CONDENSER = 4 * (2 * Q * D * D + 2 * P * D * 2 * D + 2 * 2 * Q * P * D +
                 2 * Q * D * D + 2 * 2 * Q * D * 4 * D)
PIXELS = 2 * P * W * 16 * 16 * 3  # patch tokens -> 16x16x3 pixels


def _decoder(queries: int) -> int:
    """In-projections of patches and queries; the blocks also carry RAE's
    CLS token (1 + P + Q tokens); pixels from the P patch tokens."""
    return (2 * (P + queries) * D * W +
            4 * _vit_block(1 + P + queries, W, MLP_DEC) + PIXELS)


def test_count_flops_counts_attention_on_meta():
    q = torch.empty(1, 4, 21, 24, device='meta')
    attention = count_flops(
        lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert attention == 2 * 2 * 21 * 21 * 96


@pytest.fixture(scope='module')
def measured():
    """``{config: measure(config, 'none')}`` of the two tiny tokenizers."""
    return {c: tool.measure(c, 'none') for c in (DEMO_RAE, DEMO_DECQ)}


def test_measure_matches_hand_counts(measured):
    rae, decq = measured[DEMO_RAE], measured[DEMO_DECQ]
    assert decq['encoder_flops'] == rae['encoder_flops'] == VFM
    assert decq['condenser_flops'] == CONDENSER
    assert rae['condenser_flops'] == 0 and rae['condenser_params'] == 0
    assert decq['decoder_flops'] == _decoder(Q)
    assert rae['decoder_flops'] == _decoder(0)
    assert decq['tokenizer_flops'] == VFM + CONDENSER + _decoder(Q)
    # condenser params: 3 LayerNorms, attention, MLP per layer + queries
    per_layer = 3 * 2 * D + 4 * D * D + 4 * D + 8 * D * D + 5 * D
    assert decq['condenser_params'] == 4 * per_layer + Q * D
    assert decq['encoder_params'] == rae['encoder_params']
    assert 'dit_flops' not in decq


def test_denoiser_costs_tiny_dit():
    arch = dict(body_width=64, body_depth=2, body_heads=2, head_width=96,
                head_depth=1, head_heads=2)
    shapes = {'patch': (D, 4, 4), 'query': (Q, D)}
    costs = {}
    for name, queries in (('rae', 0), ('decq', Q)):
        with torch.device('meta'):
            dit = MODELS.build(dict(type='DiTDH', arch=arch, in_channels=D,
                                    grid_size=4, num_queries=queries,
                                    num_classes=10))
        wanted = shapes if queries else {'patch': shapes['patch']}
        costs[name] = denoiser_costs(dit, wanted)
        assert costs[name]['dit_params'] == sum(
            p.numel() for p in dit.parameters())
        # backward costs about twice the forward (the input needs no grad)
        ratio = costs[name]['dit_train_flops'] / costs[name]['dit_flops']
        assert 2.5 < ratio <= 3.0
    assert costs['decq']['dit_flops'] > costs['rae']['dit_flops']


def test_table_overheads():
    rows = [dict(config='a.py', encoder_params=1e6, condenser_params=0,
                 decoder_params=2e6, encoder_flops=4e9, condenser_flops=0,
                 decoder_flops=10e9, tokenizer_flops=14e9),
            dict(config='b.py', encoder_params=1e6, condenser_params=5e5,
                 decoder_params=2e6, encoder_flops=4e9,
                 condenser_flops=0.5e9, decoder_flops=10.5e9,
                 tokenizer_flops=15e9)]
    lines = tool.table(rows).split('\n')
    assert lines[0] == '| per image | a.py | b.py | vs first |'
    assert lines[1] == '|---|---|---|---|'
    assert '| condenser params (M) | 0.00 | 0.50 | - |' in lines
    assert '| decoder GFLOPs | 10.00 | 10.50 | +5.00% |' in lines
    assert '| encode+decode GFLOPs | 14.00 | 15.00 | +7.14% |' in lines
    assert not any('DiT' in line for line in lines)  # no DiT rows given


def test_cli_writes_json(tmp_path, capsys, measured, monkeypatch):
    asked = []

    def measure(config, dit_arch):
        asked.append((config, dit_arch))
        return dict(measured[config])

    monkeypatch.setattr(tool, 'measure', measure)
    out = tmp_path / 'flops.json'
    tool.main([DEMO_RAE, DEMO_DECQ, '--dit-arch', 'none', '--out', str(out)])
    assert asked == [(DEMO_RAE, 'none'), (DEMO_DECQ, 'none')]
    rows = json.loads(out.read_text())
    assert [r['config'] for r in rows] == [Path(DEMO_RAE).name,
                                           Path(DEMO_DECQ).name]
    assert rows[1]['condenser_flops'] == CONDENSER
    overhead = 100 * (rows[1]['tokenizer_flops'] /
                      rows[0]['tokenizer_flops'] - 1)
    printed = capsys.readouterr().out
    assert f'| encode+decode GFLOPs | {rows[0]["tokenizer_flops"] / 1e9:.2f}' \
        in printed
    assert f'{overhead:+.2f}%' in printed


def test_defaults_are_the_full_recipes():
    args = tool.parse_args([])
    assert [Path(c).name for c in args.configs] == [
        'rae_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py',
        'decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py']
    assert all(Path(c).is_file() for c in args.configs)
    assert args.dit_arch == 'XL'


@pytest.mark.parametrize('missing', ['configs/nope.py'])
def test_missing_config_named(missing):
    with pytest.raises(FileNotFoundError, match='nope.py'):
        tool.measure(missing, 'none')
