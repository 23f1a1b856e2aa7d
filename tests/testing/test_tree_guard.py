"""The suite leaves the source tree as it found it."""
import subprocess
from pathlib import Path

from decq_plugin.testing.tree_guard import new_entries, tree_entries

ROOT = Path(__file__).resolve().parents[2]


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(['git', *args], cwd=str(cwd), check=True,
                   capture_output=True)


def test_new_file_in_the_tree_is_reported(tmp_path):
    _git(tmp_path, 'init', '-q')
    (tmp_path / '.gitignore').write_text('work_dirs/\n')
    (tmp_path / 'kept.txt').write_text('x')
    _git(tmp_path, 'add', '.')
    _git(tmp_path, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit',
         '-qm', 'init')
    before = tree_entries(str(tmp_path))
    assert before == set()
    (tmp_path / 'reconstructions').mkdir()
    (tmp_path / 'reconstructions' / 'a_recon.png').write_bytes(b'png')
    (tmp_path / 'work_dirs').mkdir()  # ignored by git, still reported
    (tmp_path / 'work_dirs' / 'log.txt').write_text('x')
    (tmp_path / '__pycache__').mkdir()  # byte code is not counted
    (tmp_path / '__pycache__' / 'm.cpython-311.pyc').write_bytes(b'')
    added = new_entries(before, tree_entries(str(tmp_path)))
    assert added == {'?? reconstructions/a_recon.png', '!! work_dirs/'}


def test_outside_git_nothing_is_compared(tmp_path):
    assert tree_entries(str(tmp_path)) is None
    assert new_entries(None, {'?? x'}) == set()


def test_no_test_output_is_committed():
    # tests/recipes/test_distributed.py once wrote these into the cwd.
    proc = subprocess.run(['git', 'ls-files', 'reconstructions'],
                          cwd=str(ROOT), capture_output=True, text=True)
    assert proc.stdout.strip() == ''
    assert not (ROOT / 'reconstructions').exists()
