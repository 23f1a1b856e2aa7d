"""Shared fixtures for the evaluation tests (offline, CPU, tiny)."""
import os

import numpy as np
import pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1')

TINY_EXTRACTOR = dict(type='RandomConvFeatureExtractor', feature_dim=16,
                      num_classes=10, width=8, input_size=32, seed=0)


@pytest.fixture
def tiny_extractor_cfg() -> dict:
    """Config of the tiny random extractor (16-d features, 10 logits)."""
    return dict(TINY_EXTRACTOR)


def _make_images(num: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 images [num, size, size, 3] (low-frequency colour
    blobs, so images differ in ways a conv net sees)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(num, 4, 4, 3))
    images = coarse.repeat(size // 4, axis=1).repeat(size // 4, axis=2)
    return images.round().astype(np.uint8)


@pytest.fixture
def make_images():
    """``make_images(num, size=32, seed=0)`` -> uint8 [num, size, size, 3]."""
    return _make_images
