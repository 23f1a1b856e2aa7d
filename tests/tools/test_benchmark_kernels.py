"""tools/analysis/benchmark_kernels.py: a CPU dry run of every part (tiny
shapes; the ops compute their references there), the report, and that the
``fused`` / ``qsplit`` step variants really run the fused blocks and the
split attention."""
import importlib.util
import json
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'analysis' / \
    'benchmark_kernels.py'
_spec = importlib.util.spec_from_file_location('decq_benchmark_kernels',
                                               TOOL)
tool = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = tool
_spec.loader.exec_module(tool)


def test_dry_run_measures_every_op_and_variant(tmp_path, monkeypatch):
    import decq_plugin.models.diffusion.layers as layers
    import decq_plugin.ops.fused_block as fused_block
    fused_models = []
    real = fused_block.fuse_adaln_blocks

    def spy(model, ops):
        fused_models.append((real(model, ops), sorted(ops)))
        return fused_models[-1][0]

    splits = set()
    real_attend = layers.attend

    def attend_spy(q, k, v, split_at=0, order=None):
        splits.add((q.shape[2], split_at))
        return real_attend(q, k, v, split_at, order)

    recomputed = []
    real_checkpoint = fused_block.checkpoint

    def checkpoint_spy(*args, **kwargs):
        recomputed.append(kwargs['context_fn'])
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(fused_block, 'fuse_adaln_blocks', spy)
    monkeypatch.setattr(fused_block, 'checkpoint', checkpoint_spy)
    monkeypatch.setattr(layers, 'attend', attend_spy)
    result = tool.main(['--dry-run', '--out-dir', str(tmp_path), '--iters',
                        '1', '--variants',
                        'decq,decq:fused,decq:qsplit+fused=add_norm/swiglu,'
                        'decq:fused+recompute=swiglu',
                        '--commit', 'abc123'])
    # the tiny DiT-DH: 2 body + 1 head blocks, all kernels, then a subset
    every = ['add_norm', 'norm', 'rope', 'swiglu']
    assert fused_models == [(3, every), (3, ['add_norm', 'swiglu']),
                            (3, every)]
    # 9 patches + 2 queries: split after the patches only in the qsplit run
    assert (11, 0) in splits and (11, 9) in splits
    saved = json.loads((tmp_path / 'benchmark_kernels.json').read_text())
    assert saved['commit'] == 'abc123' and len(saved['tree']) == 40
    ops = [row['op'].split()[0] for row in saved['ops']]
    assert ops == ['rms_norm_modulate', 'add_rms_norm_modulate'] * 2 + [
        'swiglu', 'rope_qkv', 'rope_qkv']
    for row in saved['ops']:
        assert 'error' not in row, row
        assert row['eager_ms'] > 0 and row['fused_ms'] > 0
        assert row['min_mb'] >= 0
    layouts = [(r['part'], r['layout'], r['shape'][2])
               for r in saved['attention']]
    assert layouts == [(part, layout, n) for part in ('body', 'head')
                       for layout, n in (('rae', 9), ('joint', 11),
                                         ('split', 11))]
    assert all(r['ms'] > 0 for r in saved['attention'])
    # bf16 inputs against float32 math: rounding-sized, not zero
    errors = [(r['out_err'], r['dq_err']) for r in saved['attention']]
    assert all(0 < out < 0.05 and 0 < dq < 0.05 for out, dq in errors), errors
    assert [r['variant'] for r in saved['step']] == [
        'decq', 'decq:fused', 'decq:qsplit+fused=add_norm/swiglu',
        'decq:fused+recompute=swiglu']
    assert all(r['img_s'] > 0 for r in saved['step']), saved['step']
    # the recompute variant ran its blocks under the checkpoint
    assert recomputed and all(fn is not None for fn in recomputed)
    table = (tmp_path / 'benchmark_kernels.md').read_text()
    assert '| decq:fused | 4 |' in table and 'commit abc123' in table
    assert '| body | default | split | [4, 4, 11, 12] |' in table
    assert 'max error out / dq vs fp32' in table
    assert result['ops'] == saved['ops']


def test_unknown_part_is_refused(capsys):
    import pytest
    with pytest.raises(SystemExit):
        tool.parse_args(['--parts', 'ops,kernels'])
    assert "unknown ['kernels']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args(['--variants', 'decq', '--profile-variants', 'rae'])
    assert "['rae'] not in --variants" in capsys.readouterr().err


def test_rae_code_variant_runs_the_given_source_in_the_same_table(tmp_path):
    """``rae-code`` times the public code's model (a stand-in here) in the
    same command as the DiT-DH rows, and the cuDNN-first default and the
    ``torch`` order reach the model."""
    import pytest
    from fake_rae_code import fake_rae_src
    with pytest.raises(SystemExit):
        tool.parse_args(['--variants', 'rae-code'])
    with fake_rae_src(tmp_path) as src:
        result = tool.main(['--dry-run', '--parts', 'step', '--iters', '1',
                            '--variants', 'rae-code,rae:torch,rae',
                            '--profile-variants', 'rae-code',
                            '--rae-src', src, '--out-dir',
                            str(tmp_path / 'out')])
    rows = {r['variant']: r for r in result['step']}
    assert list(rows) == ['rae-code', 'rae:torch', 'rae']
    for row in rows.values():
        assert 'error' not in row, row
        assert row['img_s'] > 0
    assert rows['rae-code']['cfg_forward_img_s_per_nfe'] > 0
    assert 'kernels' in rows['rae-code']
    table = (tmp_path / 'out' / 'benchmark_kernels.md').read_text()
    assert '| rae-code | 4 |' in table


def test_sdpa_options_set_the_model_order(monkeypatch):
    from decq_plugin.benchmark.gpu import dit_variants
    built = []

    def spy(*args, **kwargs):
        built.append(kwargs['attention_backends'])
        raise RuntimeError('stop after the build arguments')

    monkeypatch.setattr(dit_variants, 'build_dit', spy)
    for spec in ('decq', 'decq:flash', 'decq:torch', 'rae:efficient'):
        try:
            dit_variants.run_dit_variant(dit_variants.parse_variant(spec),
                                         None, 1, False)
        except RuntimeError:
            pass
    assert built == [True, 'flash', 'torch', 'efficient']
