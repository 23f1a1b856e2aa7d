"""Datasets and transforms."""
from . import (class_labels, demo_images, image_folder,  # noqa: F401
               latent_dataset, sample_seed, transforms)
