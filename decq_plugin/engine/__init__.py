"""Runner-side pieces: hooks, EMA of trainable parts, the per-submodule
optimizer constructor and safe checkpoint loading."""
from . import checkpoint, ema, hooks, optim_constructor  # noqa: F401
