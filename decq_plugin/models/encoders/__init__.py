"""Frozen vision-foundation-model adapters behind one interface."""
from .base import VFMEncoder  # noqa: F401
from .mmpretrain_encoder import MMPretrainViTEncoder  # noqa: F401
from .timm_encoder import TimmViTEncoder  # noqa: F401
