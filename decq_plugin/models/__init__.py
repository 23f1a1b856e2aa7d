"""Models: frozen encoders, condensers, decoders, tokenizers, losses and
the stage-2 diffusion model. Importing this package registers them."""
from . import (autoencoder_model, condensers, decoders, diffusion,  # noqa: F401
               discriminators, encoders, losses, tokenizers)
