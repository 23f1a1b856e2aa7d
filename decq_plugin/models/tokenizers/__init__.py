"""Tokenizers: the encode/decode API, RAE, DecQ and the ablations."""
from .ablations import (VFMDistillTokenizer, VFMFeatConcatTokenizer,  # noqa: F401
                        VFMFinetuneTokenizer)
from .base import BaseTokenizer  # noqa: F401
from .decq import DecQTokenizer  # noqa: F401
from .normalization import LatentNormalizer  # noqa: F401
from .rae import RAETokenizer  # noqa: F401
