"""tools/misc/check_torch_build.py: a torchvision built for another torch
(import fails inside torchvision) stops demo.sh / test.sh with one line
saying what to reinstall, not a traceback from deep inside lpips."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'misc' / 'check_torch_build.py'


def run(env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, str(TOOL)], capture_output=True,
                          text=True, env=env, timeout=300)


def test_matching_builds_pass():
    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ''


def test_mismatched_torchvision_is_one_line(tmp_path):
    fake = tmp_path / 'torchvision'
    fake.mkdir()
    (fake / '__init__.py').write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n")
    proc = run({'PYTHONPATH': str(tmp_path)})
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr
    assert 'torchvision::nms does not exist' in proc.stderr
    assert 'different builds' in proc.stderr
    assert 'pip install --force-reinstall torch torchvision' in proc.stderr


def test_both_install_scripts_run_the_check():
    for script in ('demo.sh', 'test.sh'):
        text = (ROOT / 'tools' / script).read_text()
        install = text.index('pip install')
        assert text.index('tools/misc/check_torch_build.py') > install
