"""Tokenizers: the encode/decode API, RAE, DecQ and the ablations."""
from . import ablations, base, decq, latent_stats, normalization, rae  # noqa: F401,E501
