"""Set-up helpers: registering the package's modules, its default scope and
its configs with MMEngine."""
from .setup_env import register_all_modules, register_config_package

__all__ = ['register_all_modules', 'register_config_package']
