"""Runner hooks."""
from . import reconstruction_grid_hook, sample_grid_hook  # noqa: F401
