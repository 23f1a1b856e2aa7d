"""Runner-side pieces: hooks, EMA of trainable parts and safe checkpoint
loading."""
from . import checkpoint, ema, hooks  # noqa: F401
