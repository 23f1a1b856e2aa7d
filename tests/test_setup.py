"""setup.py and requirements/: the dependency facts the install relies on."""
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _requirements(name: str):
    lines = (REPO_ROOT / 'requirements' / f'{name}.txt').read_text()
    lines = (line.split('#', 1)[0].strip() for line in lines.splitlines())
    return [line for line in lines if line]


def _name(requirement: str) -> str:
    return re.split(r'[<>=!~;\[ ]', requirement, maxsplit=1)[0].lower()


def test_runtime_requirements():
    reqs = {_name(r): r for r in _requirements('runtime')}
    # mmcv itself compiles ops (and fails here); mmcv-lite imports as mmcv.
    assert 'mmcv' not in reqs
    assert 'mmcv-lite' in reqs
    # pkg_resources, needed for `_base_ = ['pkg::...']`, is gone in 82.
    assert reqs['setuptools'].replace(' ', '') == 'setuptools<82'
    # A range keeps a user's own CUDA build of torch; never a pin.
    assert '==' not in reqs['torch'] and '>=' in reqs['torch']
    for needed in ('mmengine', 'mmpretrain', 'timm', 'lpips', 'einops',
                   'torch-fidelity', 'scikit-image', 'scipy', 'numpy',
                   'pillow', 'tqdm', 'matplotlib', 'torchvision'):
        assert needed in reqs, needed
    assert 'pytest' in {_name(r) for r in _requirements('tests')}
    interop = {_name(r) for r in _requirements('interop')}
    assert {'diffusers', 'transformers'} <= interop


def test_wheel_ships_configs(tmp_path):
    """A regular (non-editable) build puts configs/ and model-index.yml
    into decq_plugin/.mim, where ``decq_plugin::`` paths are looked up."""
    source = tmp_path / 'src'
    source.mkdir()
    for name in ('setup.py', 'MANIFEST.in', 'model-index.yml'):
        shutil.copy(REPO_ROOT / name, source / name)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '.mim')
    for name in ('requirements', 'configs', 'decq_plugin'):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=ignore)
    result = subprocess.run([
        sys.executable, '-m', 'pip', 'wheel', '--no-deps',
        '--no-build-isolation', '--disable-pip-version-check', '-q', '-w',
        str(tmp_path / 'dist'),
        str(source)
    ],
                            capture_output=True,
                            text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    wheel, = (tmp_path / 'dist').glob('decq_plugin-*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {
        name[len('decq_plugin/.mim/configs/'):]
        for name in names if name.startswith('decq_plugin/.mim/configs/')
    }
    expected = {
        str(path.relative_to(REPO_ROOT / 'configs'))
        for path in (REPO_ROOT / 'configs').rglob('*') if path.is_file()
        and '__pycache__' not in path.parts and path.suffix != '.pyc'
    }
    assert expected and configs == expected
    assert 'decq_plugin/.mim/model-index.yml' in names
    assert 'decq_plugin/registry.py' in names
    assert not any(name.startswith(('tests/', 'tools/')) for name in names)
    assert not any('__pycache__' in name for name in names)
    metadata = next(n for n in names if n.endswith('.dist-info/METADATA'))
    requires = [
        line for line in zipfile.ZipFile(wheel).read(metadata).decode()
        .splitlines() if line.startswith('Requires-Dist:')
    ]
    assert any(line.startswith('Requires-Dist: mmcv-lite') for line in
               requires)
    assert any('pytest' in line and 'extra == "tests"' in line
               for line in requires)
    for extra in ('interop', 'tests'):  # CI runs the interop tests
        assert any(line.startswith('Requires-Dist: diffusers') and
                   f'extra == "{extra}"' in line for line in requires), extra
