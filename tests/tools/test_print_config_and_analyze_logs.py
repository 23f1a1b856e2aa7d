"""tools/misc/print_config.py prints the merged config with overrides;
tools/analysis/analyze_logs.py turns vis_data/scalars.json into curves
(img/s = batch size / iteration time) and a PNG."""
import importlib.util
import json
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RAE = osp.join(ROOT, 'configs', 'rae',
               'rae_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py')


def _tool(*parts):
    spec = importlib.util.spec_from_file_location(
        'decq_tool_' + parts[-1][:-3], osp.join(ROOT, 'tools', *parts))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_print_config(tmp_path, capsys):
    out = tmp_path / 'merged.py'
    text = _tool('misc', 'print_config.py').main(
        [RAE, '--cfg-options', 'train_cfg.max_epochs=3', '--out', str(out)])
    assert 'max_epochs=3' in text and 'vit_base_patch14_reg4_dinov2' in text
    assert "type='RAETokenizer'" in capsys.readouterr().out
    from mmengine.config import Config
    assert Config.fromfile(str(out)).train_cfg.max_epochs == 3


def _write_run(root, batch: int, rows) -> None:
    vis = root / '20260101_000000' / 'vis_data'
    vis.mkdir(parents=True)
    (vis / 'config.py').write_text(
        f'train_dataloader = dict(batch_size={batch})\n')
    with open(vis / 'scalars.json', 'w') as f:
        for row in rows:
            f.write(json.dumps(row) + '\n')


def test_analyze_logs(tmp_path):
    rows = [dict(lr=1e-4 * i, loss=1.0 / i, time=0.5 * i, iter=10 * i,
                 step=10 * i) for i in range(1, 5)]
    rows.insert(2, dict(psnr=20.0, step=1))  # a validation row
    _write_run(tmp_path / 'a', 8, rows)
    out = tmp_path / 'curves.png'
    runs = _tool('analysis', 'analyze_logs.py').main(
        [str(tmp_path / 'a'), '--out', str(out), '--legend', 'A'])
    series = runs['A']
    assert series['loss'] == ([10, 20, 30, 40], [1.0, 0.5, 1 / 3, 0.25])
    assert series['lr'][1] == pytest.approx([1e-4, 2e-4, 3e-4, 4e-4])
    assert series['img/s'][1] == pytest.approx([16, 8, 16 / 3, 4])
    assert out.read_bytes()[:4] == b'\x89PNG'


def test_analyze_logs_without_logs(tmp_path):
    with pytest.raises(SystemExit, match='no vis_data/scalars.json'):
        _tool('analysis', 'analyze_logs.py').main([str(tmp_path)])
