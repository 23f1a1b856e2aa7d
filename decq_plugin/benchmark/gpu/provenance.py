"""What a GPU record ran: the commit and git's tree hash of the files as
they were (the device machine's ``.git`` may be stale, so the commit is
usually passed in and the tree hash proves it)."""
import os
import os.path as osp
import subprocess
import tempfile
from typing import Dict, Optional

from .plan import ROOT


def git(*args: str, env: Optional[Dict[str, str]] = None) -> str:
    """``git ARGS`` in the repository root; '' where git cannot run."""
    try:
        return subprocess.run(['git', *args], cwd=ROOT, capture_output=True,
                              text=True, env=env).stdout.strip()
    except OSError:
        return ''


def source_tree() -> str:
    """Git's tree hash of the files here as they are (committed or not,
    ignored files and carried wheels left out): equal to
    ``git rev-parse COMMIT^{tree}`` exactly when this run ran that commit's
    files, whatever state the ``.git`` beside them is in."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, GIT_INDEX_FILE=osp.join(tmp, 'index'))
        git('add', '-A', '--', '.', ':!.whl', ':!.gl', env=env)
        return git('write-tree', env=env)


def provenance(commit: Optional[str] = None) -> Dict[str, str]:
    """``{'commit': ..., 'tree': ...}`` (``commit`` defaults to HEAD)."""
    return dict(commit=commit or git('rev-parse', 'HEAD'),
                tree=source_tree())
