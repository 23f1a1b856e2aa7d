"""Evaluation: Frechet distance, Inception features and metrics."""
from . import fid, inception, metrics  # noqa: F401
