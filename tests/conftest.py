"""Test-wide settings: offline, few threads, private caches; shared fixtures.

Set at import, before any test module imports timm or huggingface_hub:
``HF_HUB_OFFLINE=1`` (no network, and no ~50 s of retries), a headless
matplotlib backend, and ``HF_HOME``/``TORCH_HOME`` pointing at a fresh folder
for this session, so that no test passes only because some weights happen to
lie in the user's caches, and no test writes there. The user's caches are
left as they are; the folder is removed when the session ends.
"""
import os
import shutil
import tempfile
import uuid

os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('MPLBACKEND', 'Agg')
_CACHE_ROOT = tempfile.mkdtemp(prefix='decq_test_cache_')
os.environ['HF_HOME'] = os.path.join(_CACHE_ROOT, 'huggingface')
os.environ['TORCH_HOME'] = os.path.join(_CACHE_ROOT, 'torch')

import pytest  # noqa: E402
import torch  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

from decq_plugin.testing.tree_guard import new_entries, tree_entries  # noqa: E402,E501

SCOPE = 'decq_plugin'


def _num_threads() -> int:
    """1 or 2 threads, following ``OMP_NUM_THREADS`` when it is set."""
    try:
        wanted = int(os.environ.get('OMP_NUM_THREADS', '1'))
    except ValueError:
        wanted = 1
    return max(1, min(2, wanted))


torch.set_num_threads(_num_threads())


def pytest_configure(config) -> None:
    config.addinivalue_line(
        'markers', 'recipe: runs a shipped config end to end through the '
        'tools (slow; deselect with -m "not recipe")')
    # Slow tests still run in `bash tools/test.sh`; `-m "not slow"` skips
    # them for a quick check.
    config.addinivalue_line(
        'markers', 'slow: seconds to minutes (fault injection through the '
        'real tools); deselect with -m "not slow"')


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(_CACHE_ROOT, ignore_errors=True)


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session', autouse=True)
def source_tree_unchanged():
    """Fail the session when a test leaves a new file or folder in the
    repository (tests write only under their temporary folders)."""
    before = tree_entries(REPO_ROOT)
    yield
    added = new_entries(before, tree_entries(REPO_ROOT))
    if added:
        pytest.fail('the test session left files in the source tree (tests '
                    'must write only under their tmp folders): '
                    + ', '.join(sorted(added)), pytrace=False)


@pytest.fixture
def tmp_work_dir(tmp_path) -> str:
    """An empty folder for a runner's ``work_dir`` (a str path)."""
    work_dir = tmp_path / 'work_dir'
    work_dir.mkdir()
    return str(work_dir)


@pytest.fixture
def decq_scope():
    """Make ``'decq_plugin'`` the default scope for one test.

    A new :class:`DefaultScope` with a unique instance name becomes current;
    it is removed afterwards, so the previous current scope is current again.
    Yields the instance.
    """
    name = f'{SCOPE}-test-{uuid.uuid4().hex}'
    instance = DefaultScope.get_instance(name, scope_name=SCOPE)
    try:
        yield instance
    finally:
        DefaultScope._instance_dict.pop(name, None)
