"""Runner hooks."""
from . import (non_finite_guard_hook, resumable_checkpoint_hook,  # noqa: F401
               sample_grid_hook)
