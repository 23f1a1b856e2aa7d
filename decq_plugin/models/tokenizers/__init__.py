"""Tokenizers: the encode/decode API, RAE, DecQ and the ablations."""
from . import ablations, base, decq, normalization, rae  # noqa: F401
