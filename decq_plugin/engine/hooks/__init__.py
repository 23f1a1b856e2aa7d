"""Runner hooks."""
from . import sample_grid_hook  # noqa: F401
