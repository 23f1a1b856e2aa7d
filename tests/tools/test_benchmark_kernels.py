"""tools/analysis/benchmark_kernels.py: a CPU dry run of both parts (tiny
shapes; the ops compute their references there), the report, and that a
``fused`` step variant really runs the fused blocks."""
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
    import decq_plugin.ops.fused_block as fused_block
    fused_models = []
    real = fused_block.fuse_adaln_blocks

    def spy(model):
        fused_models.append(real(model))
        return fused_models[-1]

    monkeypatch.setattr(fused_block, 'fuse_adaln_blocks', spy)
    result = tool.main(['--dry-run', '--out-dir', str(tmp_path), '--iters',
                        '1', '--variants', 'decq,decq:fused', '--commit',
                        'abc123'])
    assert fused_models == [3]  # the tiny DiT-DH: 2 body + 1 head blocks
    saved = json.loads((tmp_path / 'benchmark_kernels.json').read_text())
    assert saved['commit'] == 'abc123' and len(saved['tree']) == 40
    ops = [row['op'].split()[0] for row in saved['ops']]
    assert ops == ['rms_norm_modulate', 'add_rms_norm_modulate'] * 2 + [
        'swiglu', 'rope_qkv', 'rope_qkv']
    for row in saved['ops']:
        assert 'error' not in row, row
        assert row['eager_ms'] > 0 and row['fused_ms'] > 0
        assert row['min_mb'] >= 0
    assert [r['variant'] for r in saved['step']] == ['decq', 'decq:fused']
    assert all(r['img_s'] > 0 for r in saved['step'])
    table = (tmp_path / 'benchmark_kernels.md').read_text()
    assert '| decq:fused | 4 |' in table and 'commit abc123' in table
    assert result['ops'] == saved['ops']


def test_unknown_part_is_refused(capsys):
    import pytest
    with pytest.raises(SystemExit):
        tool.parse_args(['--parts', 'ops,kernels'])
    assert "unknown ['kernels']" in capsys.readouterr().err
