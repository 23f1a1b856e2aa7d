"""Frechet distance, feature statistics and FID reference sets.

A reference set is either an ADM-style ``.npz`` (``mu``/``sigma`` of the
2048-d Inception pool features, ``mu_s``/``sigma_s`` of the sFID spatial
features, optionally the images ``arr_0`` as uint8 [N,H,W,3] or precomputed
``features`` [N,D]) or a folder of images, whose features are computed with a
feature extractor (see :mod:`.inception`).
"""
import os
import os.path as osp
import zipfile
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .inception import (FeatureExtractorSpec, LazyFeatureExtractor,
                        uint8_nhwc_to_float)

ArrayLike = Union[np.ndarray, torch.Tensor]
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')


def _as_float64(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative eigenvalues,
    which only come from rounding, are clipped to 0)."""
    eigvals, eigvecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0, None))) @ eigvecs.T


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike,
                     sigma2: ArrayLike) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})``, in float64.

    Numerics: instead of ``scipy.linalg.sqrtm(S1 @ S2)`` (a non-symmetric
    product that can come back complex and needs an ``eps * I`` retry when
    singular), the trace term uses the identity
    ``tr((S1 S2)^{1/2}) = tr((A S2 A)^{1/2})`` with ``A = S1^{1/2}``: both
    square roots are of symmetric PSD matrices, taken with ``eigh`` and with
    rounding-level negative eigenvalues clipped to 0. It is real and finite
    for singular (rank-deficient, e.g. N < D) covariances, so no epsilon
    fallback is needed; for well-conditioned inputs it agrees with the
    ``sqrtm`` route of the ADM suite / pytorch-fid to rounding error.

    Args:
        mu1, mu2: means, shape [D] (numpy or torch).
        sigma1, sigma2: covariances, shape [D, D].
    """
    mu1, mu2 = _as_float64(mu1), _as_float64(mu2)
    sigma1 = _as_float64(sigma1)
    sigma2 = _as_float64(sigma2)
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f'mu1 and mu2 must be 1-d of equal length, got '
                         f'{mu1.shape} and {mu2.shape}')
    dim = mu1.shape[0]
    for name, sigma in (('sigma1', sigma1), ('sigma2', sigma2)):
        if sigma.shape != (dim, dim):
            raise ValueError(f'{name} must have shape {(dim, dim)} to match '
                             f'the means, got {sigma.shape}')
    sqrt1 = _sqrt_psd(sigma1)
    middle = sqrt1 @ sigma2 @ sqrt1
    eigvals = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = np.sqrt(np.clip(eigvals, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) -
                 2 * tr_covmean)


def feature_statistics(features: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (float64) of features [N, D]."""
    features = _as_float64(features)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError('features must have shape [N, D] with N >= 2, got '
                         f'{features.shape}')
    return features.mean(axis=0), np.cov(features, rowvar=False)


@dataclass
class ReferenceData:
    """Reference set: ``mu`` [D], ``sigma`` [D, D] (float64), when asked
    for the per-image ``features`` [N, D] (float32) and the sFID statistics
    ``mu_s`` [S], ``sigma_s`` [S, S]."""
    mu: np.ndarray
    sigma: np.ndarray
    features: Optional[np.ndarray] = None
    mu_s: Optional[np.ndarray] = None
    sigma_s: Optional[np.ndarray] = None


def iter_npz_images(path: str, key: str = 'arr_0',
                    batch_size: int = 500) -> Iterator[np.ndarray]:
    """Yield uint8 [b, H, W, 3] batches of the array ``key`` of an ``.npz``
    without loading the whole array (50k 256-px images are ~10 GB)."""
    with zipfile.ZipFile(path) as archive:
        member = f'{key}.npy'
        if member not in archive.namelist():
            raise KeyError(f"'{path}' has no array '{key}' (arrays: "
                           f"{[n[:-4] for n in archive.namelist()]})")
        with archive.open(member) as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0
                           if version == (1, 0) else
                           np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            if (dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3
                    or fortran):
                raise ValueError(
                    f"'{path}'['{key}'] must be a C-ordered uint8 array "
                    f'[N, H, W, 3], got dtype {dtype}, shape {shape}')
            per_image = int(np.prod(shape[1:]))
            for start in range(0, shape[0], batch_size):
                count = min(batch_size, shape[0] - start)
                buf = f.read(count * per_image)
                yield np.frombuffer(buf, np.uint8).reshape(count, *shape[1:])


def iter_folder_images(folder: str,
                       batch_size: int = 50) -> Iterator[np.ndarray]:
    """Yield uint8 [b, H, W, 3] batches of the images in ``folder`` (sorted,
    recursive). A batch is cut early where the image size changes."""
    paths = sorted(
        osp.join(root, name) for root, _, names in os.walk(folder)
        for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) "
                                f"found in reference folder '{folder}'")
    batch = []
    for path in paths:
        with Image.open(path) as img:
            array = np.asarray(img.convert('RGB'))
        if batch and (len(batch) == batch_size
                      or array.shape != batch[0].shape):
            yield np.stack(batch)
            batch = []
        batch.append(array)
    yield np.stack(batch)


def _extract(extractor: LazyFeatureExtractor,
             batches: Iterator[np.ndarray]) -> Tuple[np.ndarray, ...]:
    """Pool features [N, D] (and spatial features [N, S] when the extractor
    gives them) of the image batches, float32."""
    parts = [extractor(uint8_nhwc_to_float(b)) for b in batches]
    out = [np.concatenate([p[0] for p in parts]).astype(np.float32)]
    if len(parts[0]) > 2:
        out.append(np.concatenate([p[2] for p in parts]).astype(np.float32))
    return tuple(out)


def _spatial_stats(path: str, data, extracted: Optional[tuple]
                   ) -> Tuple[np.ndarray, np.ndarray]:
    if data is not None and {'mu_s', 'sigma_s'} <= set(data.files):
        return (np.asarray(data['mu_s'], dtype=np.float64),
                np.asarray(data['sigma_s'], dtype=np.float64))
    if extracted is None or len(extracted) < 2:
        raise KeyError(f"reference '{path}' has no sFID statistics "
                       "('mu_s', 'sigma_s') and no images 'arr_0' to compute "
                       'them from')
    return feature_statistics(extracted[1])


def load_reference(path: str,
                   feature_extractor: Union[FeatureExtractorSpec,
                                            LazyFeatureExtractor] = None,
                   need_features: bool = False,
                   batch_size: int = 50,
                   device: Optional[str] = None,
                   need_spatial: bool = False) -> ReferenceData:
    """Load a reference set from an ADM ``.npz`` or an image folder.

    ``.npz``: ``mu``/``sigma`` are used when present; per-image features
    (needed for precision/recall, or for the statistics when ``mu``/``sigma``
    are absent) come from ``features`` [N, D] or are extracted from the
    images ``arr_0`` (uint8 [N, H, W, 3]). Folder: all images are read and
    their features extracted. ``feature_extractor`` (see
    :func:`.inception.build_feature_extractor`; None = FID Inception-v3; or
    a :class:`.inception.LazyFeatureExtractor`, reused as is) is built only
    if images must be read. ``need_spatial``: also the sFID statistics, from
    ``mu_s`` / ``sigma_s`` or from the images' spatial features.
    """
    extractor = (feature_extractor
                 if isinstance(feature_extractor, LazyFeatureExtractor) else
                 LazyFeatureExtractor(feature_extractor, batch_size, device,
                                      spatial=need_spatial))
    if osp.isdir(path):
        extracted = _extract(extractor, iter_folder_images(path, batch_size))
        mu, sigma = feature_statistics(extracted[0])
        ref = ReferenceData(mu, sigma,
                            extracted[0] if need_features else None)
        if need_spatial:
            ref.mu_s, ref.sigma_s = _spatial_stats(path, None, extracted)
        return ref
    if not osp.isfile(path):
        raise FileNotFoundError(
            f"reference '{path}' does not exist: give an ADM reference batch "
            '.npz (keys mu, sigma[, arr_0]) or a folder of images')
    with np.load(path) as data:
        keys = set(data.files)
        has_stats = {'mu', 'sigma'} <= keys
        if not has_stats and ({'mu', 'sigma'} & keys):
            missing = ({'mu', 'sigma'} - keys).pop()
            raise KeyError(f"reference '{path}' has no key '{missing}' "
                           f'(keys: {sorted(keys)})')
        features, extracted = None, None
        need_images = need_spatial and not {'mu_s', 'sigma_s'} <= keys
        if need_images and 'arr_0' in keys:
            extracted = _extract(extractor,
                                 iter_npz_images(path, 'arr_0', batch_size))
        if need_features or not has_stats:
            if 'features' in keys:
                features = np.asarray(data['features'], dtype=np.float32)
            elif 'arr_0' in keys:
                extracted = extracted or _extract(
                    extractor, iter_npz_images(path, 'arr_0', batch_size))
                features = extracted[0]
            else:
                wanted = ('per-image features' if has_stats else
                          'mu and sigma')
                raise KeyError(
                    f"reference '{path}' lacks {wanted}: it needs 'mu' and "
                    "'sigma', plus 'features' [N, D] or images 'arr_0' "
                    f'[N, H, W, 3] uint8 for precision/recall (keys: '
                    f'{sorted(keys)})')
        if has_stats:
            mu = np.asarray(data['mu'], dtype=np.float64)
            sigma = np.asarray(data['sigma'], dtype=np.float64)
        else:
            mu, sigma = feature_statistics(features)
        spatial = (_spatial_stats(path, data, extracted) if need_spatial else
                   (None, None))
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"reference '{path}': mu must be [D] and sigma "
                         f'[D, D], got {mu.shape} and {sigma.shape}')
    return ReferenceData(mu, sigma, features if need_features else None,
                         *spatial)


def load_reference_statistics(
        path: str,
        feature_extractor: FeatureExtractorSpec = None,
        batch_size: int = 50,
        device: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(mu [D], sigma [D, D])`` of a reference ``.npz`` or image folder;
    see :func:`load_reference`."""
    ref = load_reference(path, feature_extractor, False, batch_size, device)
    return ref.mu, ref.sigma
