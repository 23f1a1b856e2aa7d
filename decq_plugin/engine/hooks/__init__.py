"""Runner hooks."""
from . import (fault_injection_hook, float8_training_hook,  # noqa: F401
               latent_layout_check_hook, non_finite_guard_hook,
               reconstruction_grid_hook,
               resumable_checkpoint_hook, sample_grid_hook)
