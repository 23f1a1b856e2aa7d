"""Pixel decoders."""
from .vit_decoder import DECODER_PRESETS, ViTPixelDecoder  # noqa: F401
