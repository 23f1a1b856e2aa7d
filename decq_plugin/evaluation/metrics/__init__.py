"""MMEngine metrics for reconstruction and generation."""
from . import generation, reconstruction  # noqa: F401
