"""Frozen vision-foundation-model adapters behind one interface."""
from . import base, mmpretrain_encoder, timm_encoder  # noqa: F401
