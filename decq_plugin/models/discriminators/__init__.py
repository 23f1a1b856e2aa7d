"""Discriminator of the stage-1 GAN loss and its augmentation."""
from . import diffaug, dino_discriminator  # noqa: F401
