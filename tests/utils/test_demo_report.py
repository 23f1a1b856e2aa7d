"""The demo's last step: sample grid rows are classes, and the metrics say
they come from a random feature network (not Inception)."""
from pathlib import Path

import numpy as np
from PIL import Image

from decq_plugin.utils import demo_report

ROOT = Path(__file__).resolve().parents[2]


def _work_dir(tmp_path: Path) -> Path:
    """8 classes x 4 samples of 8 px in a random class order (as
    tools/sample.py writes them); every image of class c has grey level
    20 * c + 10."""
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(8), 4))
    images = np.stack([np.full((8, 8, 3), 20 * c + 10, np.uint8)
                       for c in labels])
    (tmp_path / 'samples').mkdir()
    np.savez(tmp_path / 'samples' / 'samples.npz', arr_0=images,
             arr_1=labels.astype(np.int64))
    (tmp_path / 'generation_metrics.txt').write_text(
        '32 samples (8 classes x 4) ...\nmetrics: FID=0.0904, '
        'precision=1.0000\n')
    return tmp_path


def test_grid_rows_are_classes_and_metrics_are_labelled(tmp_path, capsys):
    work = _work_dir(tmp_path)
    demo_report.main([str(work)])
    grid = np.asarray(Image.open(work / 'sample_grid.png'))
    # 4 per row, 2 px padding: row r, column k at (2 + 10 r, 2 + 10 k)
    assert grid.shape == (8 * 10 + 2, 4 * 10 + 2, 3)
    for row in range(8):
        levels = {int(grid[2 + 10 * row + 4, 2 + 10 * k + 4, 0])
                  for k in range(4)}
        assert levels == {20 * row + 10}, (row, levels)
    out = capsys.readouterr().out
    assert 'one class per row' in out
    assert 'random feature network' in out and 'not from Inception' in out
    text = (work / 'generation_metrics.txt').read_text()
    assert text.startswith(demo_report.RANDOM_FEATURES_NOTE)
    assert 'FID=0.0904' in text
    demo_report.main([str(work)])  # labelled once
    text = (work / 'generation_metrics.txt').read_text()
    assert text.count(demo_report.RANDOM_FEATURES_NOTE) == 1


def test_demo_script_uses_it():
    script = (ROOT / 'tools' / 'demo.sh').read_text()
    assert '-m decq_plugin.utils.demo_report "$WORK"' in script
    assert 'nrow=8' not in script
