"""What a test run leaves in the source tree.

Tests write only under their temporary folders. :func:`tree_entries` lists
the repository's untracked, ignored and changed paths (``git status``); the
test session compares the list before and after the suite
(``tests/conftest.py``) and fails when an entry appears, such as a
``reconstructions/`` folder a tool wrote into the working directory.
Python's byte-code caches and pytest's own cache are not counted.
"""
import os.path as osp
import subprocess
from typing import Optional, Set

#: Path parts that a test run may create (byte code, pytest's cache).
_RUN_ARTEFACTS = ('__pycache__', '.pytest_cache', '.egg-info')


def _is_run_artefact(path: str) -> bool:
    return path.endswith('.pyc') or any(part in path
                                        for part in _RUN_ARTEFACTS)


def tree_entries(root: str) -> Optional[Set[str]]:
    """``git status`` lines (status and path) of every untracked, ignored or
    changed path under ``root``, without run artefacts; None when ``root`` is
    not a git checkout (or git is missing)."""
    if not osp.exists(osp.join(root, '.git')):
        return None
    try:
        proc = subprocess.run(
            ['git', 'status', '--porcelain', '--untracked-files=all',
             '--ignored=matching'],
            cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return {line for line in proc.stdout.splitlines()
            if line.strip() and not _is_run_artefact(line[3:])}


def new_entries(before: Optional[Set[str]],
                after: Optional[Set[str]]) -> Set[str]:
    """Entries of ``after`` that ``before`` lacks (empty when either
    listing is unavailable)."""
    if before is None or after is None:
        return set()
    return after - before
