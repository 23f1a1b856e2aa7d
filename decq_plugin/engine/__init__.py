"""Runner-side pieces: hooks, EMA of trainable parts, the per-submodule
optimizer constructor, safe checkpoint loading and the run visualizer."""
from . import checkpoint, ema, hooks, optim_constructor, visualizer  # noqa

