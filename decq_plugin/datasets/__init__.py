"""Datasets and transforms."""
from . import demo_images, image_folder, latent_dataset, transforms  # noqa: F401
