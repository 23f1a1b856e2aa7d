"""A user's config that inherits a shipped one as ``'decq_plugin::...'``
trains an epoch through ``tools/train.py``: with the package installed
(editable here), and from a plain copy of the repository that was never
pip-installed (its ``decq_plugin/.mim`` links are part of the tree)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .test_recipes import ROOT

BASE = 'decq_plugin::demo/decq_tiny_1xb8-16e_demo-64.py'
USER_CONFIG = f"""_base_ = [{BASE!r}]
# An ablation: fewer queries, a short run.
model = dict(tokenizer=dict(condenser=dict(num_queries=4)))
train_dataloader = dict(dataset=dict(samples_per_epoch=16))
train_cfg = dict(max_epochs=1, val_interval=1)
"""


def _train(repo: Path, config: Path, work_dir: Path) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='2')
    env.pop('PYTHONPATH', None)
    proc = subprocess.run(
        [sys.executable, str(repo / 'tools' / 'train.py'), str(config),
         '--work-dir', str(work_dir)],
        cwd=str(config.parent), env=env, capture_output=True, text=True,
        timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    return output


def _dumped_config(work_dir: Path) -> str:
    dumped = work_dir / 'my_ablation.py'
    assert dumped.is_file(), sorted(p.name for p in work_dir.iterdir())
    return dumped.read_text()


def _plain_copy(target: Path) -> Path:
    """The tracked files of the repository (links kept as links), as a
    fresh clone has them."""
    files = subprocess.run(['git', 'ls-files', '-z'], cwd=str(ROOT),
                           capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split('\0')):
        source, dest = ROOT / name, target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), dest)
        elif source.is_file():
            shutil.copy2(source, dest)
    return target


@pytest.mark.recipe
def test_inherit_through_the_package(tmp_path):
    config = tmp_path / 'my_ablation.py'
    config.write_text(USER_CONFIG)
    work_dir = tmp_path / 'work'
    output = _train(ROOT, config, work_dir)
    assert 'Epoch(val) [1]' in output
    assert (work_dir / 'epoch_1.pth').is_file()
    text = _dumped_config(work_dir)
    assert 'num_queries=4' in text and "type='DecQTokenizer'" in text


@pytest.mark.recipe
def test_inherit_through_a_plain_clone(tmp_path):
    if not (ROOT / '.git').exists():
        pytest.skip('not a git checkout')
    clone = _plain_copy(tmp_path / 'clone')
    assert (clone / 'decq_plugin' / '.mim' / 'configs').is_symlink()
    # Mark the clone's copy of the base config, to see which one is read.
    shipped = clone / 'configs' / 'demo' / 'decq_tiny_1xb8-16e_demo-64.py'
    shipped.write_text(shipped.read_text() + "\nclone_marker = 'clone'\n")
    user = tmp_path / 'user'
    user.mkdir()
    config = user / 'my_ablation.py'
    config.write_text(USER_CONFIG)
    work_dir = user / 'work'
    _train(clone, config, work_dir)
    assert (work_dir / 'epoch_1.pth').is_file()
    assert "clone_marker = 'clone'" in _dumped_config(work_dir)
