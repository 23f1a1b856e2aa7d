"""Make ``decq_plugin`` known to MMEngine: its modules, scope and configs."""
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.registry import init_default_scope as set_default_scope

from decq_plugin.registry import SCOPE

# MMEngine resolves ``_base_ = ['decq_plugin::a/b.py']`` through
# ``MODULE2PACKAGE[scope]``: it asks pkg_resources for a distribution of that
# name, and, if there is none, takes the folder of the module that
# ``importlib.util.find_spec`` finds under that name; the config is then read
# from ``<folder>/.mim/configs/a/b.py``. A distribution's location is
# site-packages even for an editable install, where the package itself lives
# in the source tree, so the value names a module of the package instead: its
# folder is the package's folder for a regular install, an editable install
# and a source checkout alike.
CONFIG_MODULE = f'{SCOPE}.registry'


def register_config_package() -> None:
    """Let ``_base_`` entries of the form ``'decq_plugin::path'`` resolve.

    Must run before ``Config.fromfile`` parses a config that uses them.
    """
    MODULE2PACKAGE[SCOPE] = CONFIG_MODULE


def register_all_modules(init_default_scope: bool = True) -> None:
    """Import every module of ``decq_plugin`` so its registries are filled.

    Args:
        init_default_scope: also make ``'decq_plugin'`` the current default
            scope, so that ``type='Name'`` is looked up here first.
    """
    import decq_plugin.datasets  # noqa: F401
    import decq_plugin.engine  # noqa: F401
    import decq_plugin.evaluation  # noqa: F401
    import decq_plugin.models  # noqa: F401
    register_config_package()
    if init_default_scope:
        set_default_scope(SCOPE)
