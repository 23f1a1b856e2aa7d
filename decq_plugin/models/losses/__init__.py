"""Losses: perceptual, adversarial and flow matching."""
from . import adversarial, flow_matching, perceptual  # noqa: F401
