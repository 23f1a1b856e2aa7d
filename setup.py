"""Install ``decq_plugin``.

The configs ship inside the package as ``decq_plugin/.mim/configs``, the place
where MMEngine looks for ``_base_ = ['decq_plugin::path/to/config.py']``:

* ``pip install .`` copies ``configs/`` into the built package;
* ``pip install -e .`` links ``decq_plugin/.mim/configs -> ../../configs`` in
  the source tree, so edits to the configs are seen at once.
"""
import os
import os.path as osp
import re
import shutil
import sys
from typing import List

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = osp.dirname(osp.abspath(__file__))
PACKAGE = 'decq_plugin'
# Copied (or, for editable installs, linked) into ``<package>/.mim``.
# MMEngine reads ``.mim/model-index.yml`` first, then ``.mim/configs``.
SHIPPED = ('configs', 'model-index.yml')
EDITABLE_COMMANDS = ('develop', 'editable_wheel')


def read_version() -> str:
    """Return ``__version__`` of the package without importing it."""
    with open(osp.join(ROOT, PACKAGE, '__init__.py'), encoding='utf-8') as f:
        match = re.search(r"^__version__ = '([^']+)'", f.read(), re.M)
    if match is None:
        raise RuntimeError(f'no __version__ in {PACKAGE}/__init__.py')
    return match.group(1)


def read_requirements(name: str) -> List[str]:
    """Return the requirement lines of ``requirements/<name>.txt``."""
    path = osp.join(ROOT, 'requirements', f'{name}.txt')
    with open(path, encoding='utf-8') as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line]


def remove_path(path: str) -> None:
    """Remove a file, link or folder if it exists."""
    if osp.islink(path) or osp.isfile(path):
        os.remove(path)
    elif osp.isdir(path):
        shutil.rmtree(path)


def copy_path(source: str, target: str) -> None:
    """Copy a file or folder (without bytecode) to ``target``."""
    remove_path(target)
    if osp.isdir(source):
        shutil.copytree(
            source, target,
            ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    else:
        shutil.copyfile(source, target)


def link_shipped() -> None:
    """Link each shipped path into ``<package>/.mim`` (editable installs).

    Falls back to a copy where links cannot be made.
    """
    mim_dir = osp.join(ROOT, PACKAGE, '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in SHIPPED:
        target = osp.join(mim_dir, name)
        relative_source = osp.join('..', '..', name)
        if osp.islink(target) and os.readlink(target) == relative_source:
            continue
        remove_path(target)
        try:
            os.symlink(relative_source, target)
        except OSError:
            copy_path(osp.join(ROOT, name), target)


class BuildPyWithConfigs(build_py):
    """``build_py`` that also puts the shipped paths into ``.mim``."""

    def run(self) -> None:
        super().run()
        if getattr(self, 'editable_mode', False):
            link_shipped()
            return
        mim_dir = osp.join(self.build_lib, PACKAGE, '.mim')
        os.makedirs(mim_dir, exist_ok=True)
        for name in SHIPPED:
            copy_path(osp.join(ROOT, name), osp.join(mim_dir, name))


if __name__ == '__main__':
    if any(command in sys.argv for command in EDITABLE_COMMANDS):
        link_shipped()
    setup(
        name=PACKAGE,
        version=read_version(),
        description=('DecQ: detail-condensing queries for representation '
                     'autoencoders, as an MMEngine plugin'),
        keywords='computer vision, tokenizer, diffusion, representation '
        'autoencoder, mmengine',
        packages=find_packages(include=[PACKAGE, f'{PACKAGE}.*']),
        python_requires='>=3.9',
        install_requires=read_requirements('runtime'),
        extras_require={
            # The tests exercise the diffusers interop against the real
            # packages, so the tests extra includes the interop one.
            # ... and FP8 training (tests/models/test_fp8.py).
            'tests': (read_requirements('tests') +
                      read_requirements('interop') + read_requirements('fp8')),
            'interop': read_requirements('interop'),
            'fp8': read_requirements('fp8'),
            'tensorboard': read_requirements('tensorboard'),
        },
        cmdclass={'build_py': BuildPyWithConfigs},
        zip_safe=False,
    )
