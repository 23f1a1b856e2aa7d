"""Frechet distance, feature statistics and reference loading."""
import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from decq_plugin.evaluation.fid import (feature_statistics, frechet_distance,
                                        iter_folder_images, iter_npz_images,
                                        load_reference,
                                        load_reference_statistics)
from decq_plugin.evaluation.inception import (LazyFeatureExtractor,
                                              uint8_nhwc_to_float)


def random_stats(rng: np.random.Generator, dim: int, num: int):
    feats = rng.normal(size=(num, dim)) @ rng.normal(size=(dim, dim))
    feats += rng.normal(size=dim)
    return feats.mean(0), np.cov(feats, rowvar=False)


def sqrtm_fid(mu1, s1, mu2, s2) -> float:
    """Independent reference: the ADM / pytorch-fid formula with sqrtm."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) -
                 2 * np.trace(covmean))


def test_frechet_matches_sqrtm_zero_and_symmetric():
    rng = np.random.default_rng(0)
    mu1, s1 = random_stats(rng, 12, 200)
    mu2, s2 = random_stats(rng, 12, 200)
    value = frechet_distance(mu1, s1, mu2, s2)
    assert value > 1
    assert value == pytest.approx(sqrtm_fid(mu1, s1, mu2, s2), rel=1e-8)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(value,
                                                               rel=1e-10)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-8
    # torch inputs (float32) give the same number up to float32 rounding
    torch_value = frechet_distance(*(torch.from_numpy(a).float()
                                     for a in (mu1, s1, mu2, s2)))
    assert torch_value == pytest.approx(value, rel=1e-5)


def test_frechet_singular_covariances_and_shape_errors():
    rng = np.random.default_rng(1)
    # 5 samples in 20 dims: rank-deficient covariances
    mu1, s1 = feature_statistics(rng.normal(size=(5, 20)))
    mu2, s2 = feature_statistics(rng.normal(size=(5, 20)) + 0.5)
    value = frechet_distance(mu1, s1, mu2, s2)
    eps = 1e-6 * np.eye(20)
    assert np.isfinite(value)
    assert value == pytest.approx(sqrtm_fid(mu1, s1 + eps, mu2, s2 + eps),
                                  rel=1e-4)
    with pytest.raises(ValueError, match='sigma2'):
        frechet_distance(mu1, s1, mu2, s2[:3, :3])
    with pytest.raises(ValueError, match='mu1 and mu2'):
        frechet_distance(mu1, s1, mu2[:3], s2)


def test_feature_statistics():
    feats = np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32)
    mu, sigma = feature_statistics(torch.from_numpy(feats))
    assert mu.dtype == np.float64 and sigma.shape == (4, 4)
    np.testing.assert_allclose(mu, feats.astype(np.float64).mean(0))
    np.testing.assert_allclose(sigma, np.cov(feats.astype(np.float64).T))
    with pytest.raises(ValueError, match='N >= 2'):
        feature_statistics(feats[:1])


def test_reference_npz_stats_and_errors(tmp_path):
    rng = np.random.default_rng(3)
    mu, sigma = random_stats(rng, 6, 50)
    path = tmp_path / 'ref.npz'
    np.savez(path, mu=mu, sigma=sigma)
    got_mu, got_sigma = load_reference_statistics(str(path))
    np.testing.assert_array_equal(got_mu, mu)
    np.testing.assert_array_equal(got_sigma, sigma)

    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_reference_statistics(str(tmp_path / 'missing.npz'))
    np.savez(tmp_path / 'no_sigma.npz', mu=mu)
    with pytest.raises(KeyError, match="'sigma'"):
        load_reference_statistics(str(tmp_path / 'no_sigma.npz'))
    np.savez(tmp_path / 'nothing.npz', other=mu)
    with pytest.raises(KeyError, match='lacks mu and sigma'):
        load_reference_statistics(str(tmp_path / 'nothing.npz'))
    # precision/recall need per-image features: stats alone are not enough
    with pytest.raises(KeyError, match='per-image features'):
        load_reference(str(path), need_features=True)


def test_npz_images_are_streamed_exactly(tmp_path, make_images):
    images = make_images(7, seed=4)
    for save in (np.savez, np.savez_compressed):
        path = tmp_path / f'{save.__name__}.npz'
        save(path, arr_0=images)
        batches = list(iter_npz_images(str(path), batch_size=3))
        assert [len(b) for b in batches] == [3, 3, 1]
        np.testing.assert_array_equal(np.concatenate(batches), images)
    np.savez(tmp_path / 'float.npz', arr_0=images.astype(np.float32))
    with pytest.raises(ValueError, match='uint8'):
        next(iter_npz_images(str(tmp_path / 'float.npz')))


def test_folder_and_npz_images_reference(tmp_path, tiny_extractor_cfg,
                                        make_images):
    images = make_images(12, seed=5)
    folder = tmp_path / 'ref'
    (folder / 'sub').mkdir(parents=True)
    for i, img in enumerate(images):
        sub = folder / 'sub' if i % 2 else folder
        Image.fromarray(img).save(sub / f'{i:03d}.png')
    extractor = LazyFeatureExtractor(tiny_extractor_cfg, 5, 'cpu')
    order = list(range(0, 12, 2)) + list(range(1, 12, 2))  # sorted paths
    loaded = np.concatenate(list(iter_folder_images(str(folder), 5)))
    np.testing.assert_array_equal(loaded, images[order])

    expected_feats = extractor(uint8_nhwc_to_float(images))[0]
    exp_mu, exp_sigma = feature_statistics(expected_feats)
    ref = load_reference(str(folder), tiny_extractor_cfg, need_features=True,
                         device='cpu')
    np.testing.assert_allclose(ref.mu, exp_mu, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ref.sigma, exp_sigma, rtol=1e-4, atol=1e-8)
    assert ref.features.shape == (12, 16)

    # an npz with only images gives the same statistics
    np.savez(tmp_path / 'imgs.npz', arr_0=images)
    mu, sigma = load_reference_statistics(str(tmp_path / 'imgs.npz'),
                                          tiny_extractor_cfg, device='cpu')
    np.testing.assert_allclose(mu, exp_mu, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sigma, exp_sigma, rtol=1e-4, atol=1e-8)

    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no images'):
        load_reference_statistics(str(tmp_path / 'empty'), tiny_extractor_cfg)
