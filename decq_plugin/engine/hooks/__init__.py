"""Runner hooks."""
from . import (latent_layout_check_hook, non_finite_guard_hook,  # noqa: F401
               reconstruction_grid_hook, resumable_checkpoint_hook,
               sample_grid_hook)
