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


def test_analyze_logs_stage1_lrs_and_validation_keys(tmp_path, capsys):
    """Stage 1 logs one lr per optimizer (``tokenizer.lr``,
    ``discriminator.lr``): the default keys plot both. Validation rows
    (no ``iter``, MMEngine's ``step`` is the epoch) are plotted at the
    iteration where validation ran; an absent key is reported."""
    rows = []
    for epoch in (1, 2):
        for i in (1, 2):
            it = (epoch - 1) * 2 + i
            rows.append({'tokenizer.lr': 1e-4 * it,
                         'discriminator.lr': 2e-4 * it, 'loss': 1.0 / it,
                         'time': 0.5, 'epoch': epoch, 'iter': it,
                         'step': it})
        rows.append(dict(PSNR=10.0 + epoch, SSIM=0.1 * epoch, step=epoch))
    _write_run(tmp_path / 'a', 8, rows)
    tool = _tool('analysis', 'analyze_logs.py')
    out = tmp_path / 'curves.png'
    series = tool.main([str(tmp_path / 'a'), '--out', str(out),
                        '--legend', 'A'])['A']
    assert series['tokenizer.lr'][1] == pytest.approx(
        [1e-4, 2e-4, 3e-4, 4e-4])
    assert series['discriminator.lr'][0] == [1, 2, 3, 4]
    series = tool.main([str(tmp_path / 'a'), '--keys', 'loss', 'PSNR',
                        'FID', '--out', str(out), '--legend', 'A'])['A']
    assert series['PSNR'] == ([2, 4], [11.0, 12.0])
    assert set(series) == {'loss', 'PSNR'}
    err = capsys.readouterr().err
    assert "key 'FID' is not in" in err and 'PSNR' in err
    assert out.read_bytes()[:4] == b'\x89PNG'
    with pytest.raises(SystemExit, match="none of the keys FID was found"):
        tool.main([str(tmp_path / 'a'), '--keys', 'FID', '--out', str(out)])
