"""Pixel decoders."""
from . import vit_decoder  # noqa: F401
