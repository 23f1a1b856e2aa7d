"""Shrunk recipes and synthetic inputs for smoke runs of shipped configs
(``tools/misc/smoke_config.py`` and the recipe tests)."""
from .shrink import recipe_kind, shrink_overrides, write_shrunk_config
from .synthetic import (make_imagenet_folder, make_reference_npz,
                        save_module_checkpoint)

__all__ = [
    'make_imagenet_folder', 'make_reference_npz', 'recipe_kind',
    'save_module_checkpoint', 'shrink_overrides', 'write_shrunk_config'
]
