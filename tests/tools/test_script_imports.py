"""Every script under tools/ runs from a plain checkout (the GPU machine
has no ``pip install -e .``): it puts the repository on ``sys.path``
before its first module-level import of ``decq_plugin``."""
import ast
import glob
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPTS = sorted(
    osp.relpath(p, ROOT)
    for p in glob.glob(osp.join(ROOT, 'tools', '**', '*.py'), recursive=True))


def imports_before_path_insert(source: str) -> list:
    """Line numbers of module-level ``decq_plugin`` imports that come
    before any module-level ``sys.path.insert``."""
    early, inserted = [], False
    for node in ast.parse(source).body:
        if 'sys.path.insert' in ast.unparse(node):
            inserted = True
        if isinstance(node, ast.ImportFrom):
            names = [node.module or '']
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        if not inserted and any(
                n.split('.')[0] == 'decq_plugin' for n in names):
            early.append(node.lineno)
    return early


def test_detector_flags_an_early_import():
    src = ('import sys\nfrom decq_plugin.utils.cli import doc_summary\n'
           "sys.path.insert(0, 'x')\n")
    assert imports_before_path_insert(src) == [2]
    assert imports_before_path_insert(src.splitlines()[0] + '\n' +
                                      src.splitlines()[2] + '\n' +
                                      src.splitlines()[1] + '\n') == []


@pytest.mark.parametrize('script', SCRIPTS)
def test_repository_on_path_before_project_import(script):
    with open(osp.join(ROOT, script)) as f:
        early = imports_before_path_insert(f.read())
    assert not early, (f'{script}: decq_plugin imported at line(s) {early} '
                       'before sys.path.insert')
