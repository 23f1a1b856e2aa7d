"""Runner hooks."""
from . import (fault_injection_hook, latent_layout_check_hook,  # noqa: F401
               non_finite_guard_hook, reconstruction_grid_hook,
               resumable_checkpoint_hook, sample_grid_hook)
