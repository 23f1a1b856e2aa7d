"""decq_plugin.utils.setup_env: scope, module registration and the
``decq_plugin::`` config prefix."""
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.registry import DefaultScope
from mmengine.utils import get_installed_path, is_installed

import decq_plugin
from decq_plugin import registry
from decq_plugin.utils import register_all_modules, register_config_package

PACKAGE_DIR = osp.dirname(osp.abspath(decq_plugin.__file__))
SHIPPED_CONFIGS = osp.join(PACKAGE_DIR, '.mim', 'configs')


@pytest.fixture
def restore_scopes():
    before = set(DefaultScope._instance_dict)
    yield
    for name in set(DefaultScope._instance_dict) - before:
        DefaultScope._instance_dict.pop(name)


def test_config_package_points_at_this_package():
    register_config_package()
    name = MODULE2PACKAGE['decq_plugin']
    assert is_installed(name)
    # The folder whose .mim/configs MMEngine reads, for any kind of install.
    assert osp.samefile(get_installed_path(name), PACKAGE_DIR)


def test_register_all_modules_fills_registries_and_sets_scope(
        restore_scopes):
    register_all_modules(init_default_scope=True)
    assert DefaultScope.get_current_instance().scope_name == 'decq_plugin'
    for name in ('MODELS', 'DATASETS', 'METRICS', 'HOOKS'):
        assert len(getattr(registry, name).module_dict) > 0, name


def test_register_all_modules_without_scope_keeps_current(restore_scopes):
    DefaultScope.get_instance('setup-env-test-other', scope_name='mmengine')
    register_all_modules(init_default_scope=False)
    assert DefaultScope.get_current_instance().scope_name == 'mmengine'


@pytest.mark.skipif(
    not osp.isdir(SHIPPED_CONFIGS),
    reason='configs not shipped: install the package (pip install -e .)')
def test_config_inherits_from_package_prefix(tmp_path):
    register_config_package()
    child = tmp_path / 'child.py'
    child.write_text("_base_ = ['decq_plugin::_base_/default_runtime.py']\n"
                     "child_value = 3\n")
    cfg = Config.fromfile(str(child))
    assert cfg.default_scope == 'decq_plugin'
    assert cfg.child_value == 3
    shipped = osp.join(SHIPPED_CONFIGS, '_base_', 'default_runtime.py')
    assert osp.isfile(shipped)

    missing = tmp_path / 'missing.py'
    missing.write_text("_base_ = ['decq_plugin::_base_/no_such_file.py']\n")
    with pytest.raises(FileNotFoundError, match='no_such_file.py'):
        Config.fromfile(str(missing))
