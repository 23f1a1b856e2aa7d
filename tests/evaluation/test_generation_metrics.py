"""IS, precision/recall, GenerationMetric and the .npz evaluation."""
import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.registry import init_default_scope
from PIL import Image

from decq_plugin.evaluation.fid import feature_statistics, frechet_distance
from decq_plugin.evaluation.inception import (LazyFeatureExtractor,
                                              uint8_nhwc_to_float)
from decq_plugin.evaluation.metrics.generation import (
    GenerationMetric, evaluate_samples_npz, inception_score, precision_recall)


def adm_inception_score(logits: np.ndarray, split_size: int = 5000) -> float:
    """ADM evaluator's definition, by hand: softmax, then consecutive
    splits of ``split_size`` in the given order, exp(mean KL) averaged."""
    e = np.exp(logits - logits.max(1, keepdims=True))
    preds = e / e.sum(1, keepdims=True)
    scores = []
    for i in range(0, len(preds), split_size):
        part = preds[i:i + split_size]
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores))


def test_inception_score_extremes():
    mean, std = inception_score(np.zeros((40, 7)), split_size=4)
    assert mean == pytest.approx(1.0, abs=1e-12) and std < 1e-12
    # confident and uniformly spread over 8 classes within each split
    labels = np.tile(np.arange(8), 20)
    logits = np.full((160, 8), -30.0)
    logits[np.arange(160), labels] = 30.0
    mean, _ = inception_score(logits, split_size=16)
    assert mean == pytest.approx(8.0, rel=1e-6)
    # confident but always the same class: 1 again
    assert inception_score(logits[labels == 3], 4)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match='split_size'):
        inception_score(np.zeros((5, 3)), split_size=0)


def test_inception_score_is_adms_on_splits_of_5000():
    rng = np.random.default_rng(0)
    n, k = 12_000, 50  # splits of 5000, 5000 and 2000, as ADM's loop
    logits = rng.normal(scale=3.0, size=(n, k))
    assert inception_score(logits)[0] == pytest.approx(
        adm_inception_score(logits), rel=1e-9)
    assert inception_score(logits[:4000])[0] == pytest.approx(
        adm_inception_score(logits[:4000]), rel=1e-9)
    # Class order matters for splits: sorted classes give each split a few
    # classes only; the random order (what the samplers write) does not.
    labels = np.repeat(np.arange(k), n // k)
    confident = np.full((n, k), -5.0)
    confident[np.arange(n), labels] = 5.0
    order = np.random.default_rng(1).permutation(n)
    shuffled = inception_score(confident[order])[0]
    assert shuffled > 2 * inception_score(confident)[0]
    assert shuffled == pytest.approx(adm_inception_score(confident[order]),
                                     rel=1e-9)


def test_sfid_is_adms_frechet_distance_of_spatial_features(
        tmp_path, tiny_extractor_cfg, make_images):
    """sFID by hand as the ADM evaluator: spatial maps [N, h, w, C] (TF
    layout), the first 7 channels flattened, mean / np.cov, and the
    Frechet distance with scipy's sqrtm, against the reference's
    ``mu_s`` / ``sigma_s``."""
    from scipy import linalg

    from decq_plugin.evaluation.inception import (RandomConvFeatureExtractor,
                                                  spatial_features)
    fmap = torch.randn(3, 9, 4, 5)
    nhwc = fmap.permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(spatial_features(fmap).numpy(),
                                  nhwc[..., :7].reshape(3, -1))

    net = RandomConvFeatureExtractor(**{
        k: v for k, v in tiny_extractor_cfg.items() if k != 'type'},
        spatial=True)
    ref_images, fake_images = make_images(40, seed=1), make_images(30, seed=2)
    ref_s = net(uint8_nhwc_to_float(ref_images))[2].double().numpy()
    fake_s = net(uint8_nhwc_to_float(fake_images))[2].double().numpy()
    assert ref_s.shape[1] == 4 * 4 * 7  # last conv: 4x4 map at 32 px

    def fd(mu1, s1, mu2, s2):
        covmean = np.real(linalg.sqrtm(s1.dot(s2)))
        d = mu1 - mu2
        return d.dot(d) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)

    # Rank-deficient covariances (N < S): compare on a well-posed subset.
    keep = np.sort(np.argsort(ref_s.var(0))[-8:])
    mu_s, sigma_s = ref_s[:, keep].mean(0), np.cov(ref_s[:, keep],
                                                   rowvar=False)
    want = fd(fake_s[:, keep].mean(0), np.cov(fake_s[:, keep], rowvar=False),
              mu_s, sigma_s)
    ref = tmp_path / 'ref.npz'
    np.savez(ref, mu=np.zeros(16), sigma=np.eye(16), mu_s=mu_s,
             sigma_s=sigma_s)

    def first12(images):
        f, lg, sp = net(images)
        return f, lg, sp[:, keep]

    metric = GenerationMetric(metric_names=('sfid', ), reference=str(ref),
                              feature_extractor=first12, device='cpu')
    metric.process({}, _samples(fake_images))
    got = metric.evaluate(30)['sFID']
    assert got == pytest.approx(want, rel=1e-6)
    assert got > 0


def test_precision_recall_identical_disjoint_and_partial():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 5))
    assert precision_recall(real, real, k=3, batch_size=16,
                            device='cpu') == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(far, real, device='cpu') == (0.0, 0.0)
    # half the fakes on the real manifold, half far away
    fake = np.concatenate([real[:30] + 1e-3, far[:30]])
    precision, recall = precision_recall(fake, real, batch_size=7,
                                         device='cpu')
    assert precision == pytest.approx(0.5)
    assert 0.0 < recall < 1.0
    with pytest.raises(ValueError, match='same D'):
        precision_recall(fake[:, :3], real, device='cpu')


def _samples(images_uint8: np.ndarray) -> list:
    return [dict(pred=img) for img in uint8_nhwc_to_float(images_uint8)]


def test_generation_metric_with_npz_and_folder_reference(
        tmp_path, tiny_extractor_cfg, make_images):
    ref_images = make_images(40, seed=1)
    fake_images = make_images(30, seed=2)
    extractor = LazyFeatureExtractor(tiny_extractor_cfg, 8, 'cpu')
    ref_feats, _ = extractor(uint8_nhwc_to_float(ref_images))
    fake_feats, fake_logits = extractor(uint8_nhwc_to_float(fake_images))
    mu, sigma = feature_statistics(ref_feats)
    expected_fid = frechet_distance(*feature_statistics(fake_feats), mu,
                                    sigma)
    expected_is = inception_score(fake_logits)[0]
    expected_pr = precision_recall(fake_feats, ref_feats, device='cpu')
    ref_npz = tmp_path / 'ref.npz'
    np.savez(ref_npz, mu=mu, sigma=sigma, arr_0=ref_images)
    folder = tmp_path / 'ref_folder'
    folder.mkdir()
    for i, img in enumerate(ref_images):
        Image.fromarray(img).save(folder / f'{i:03d}.png')

    init_default_scope('decq_plugin')
    for reference in (ref_npz, folder):
        evaluator = Evaluator(dict(
            type='GenerationMetric', reference=str(reference),
            feature_extractor=tiny_extractor_cfg, batch_size=8,
            device='cpu'))
        samples = _samples(fake_images)
        for start in range(0, 30, 8):
            evaluator.process(samples[start:start + 8])
        result = evaluator.evaluate(30)
        assert result['FID'] == pytest.approx(expected_fid, rel=1e-4)
        assert result['IS'] == pytest.approx(expected_is, rel=1e-5)
        assert (result['precision'], result['recall']) == pytest.approx(
            expected_pr)
        assert result['FID'] > 0 and result['IS'] > 1

    # identical sets: FID ~ 0, precision = recall = 1
    metric = GenerationMetric(reference=str(ref_npz),
                              feature_extractor=tiny_extractor_cfg,
                              device='cpu')
    metric.process({}, _samples(ref_images))
    same = metric.evaluate(40)
    assert abs(same['FID']) < 1e-6
    assert same['precision'] == 1.0 and same['recall'] == 1.0


def test_metric_subsets_and_argument_errors(tiny_extractor_cfg, tmp_path,
                                            make_images):
    metric = GenerationMetric(metric_names=('is', ), reference=None,
                              feature_extractor=tiny_extractor_cfg,
                              device='cpu')
    metric.process({}, _samples(make_images(20)))
    assert set(metric.evaluate(20)) == {'IS', 'IS_std'}
    with pytest.raises(ValueError, match='reference'):
        GenerationMetric(metric_names=('fid', ))
    with pytest.raises(ValueError, match='subset'):
        GenerationMetric(metric_names=('kid', ), reference='x.npz')
    # FID only needs mu/sigma: no images in the reference file
    np.savez(tmp_path / 'stats.npz', mu=np.zeros(16), sigma=np.eye(16))
    metric = GenerationMetric(metric_names=('fid', ),
                              reference=str(tmp_path / 'stats.npz'),
                              feature_extractor=tiny_extractor_cfg,
                              device='cpu')
    metric.process({}, _samples(make_images(10)))
    assert set(metric.evaluate(10)) == {'FID'}


def test_evaluate_samples_npz_matches_metric(tmp_path, tiny_extractor_cfg,
                                             make_images):
    ref = tmp_path / 'ref.npz'
    np.savez(ref, arr_0=make_images(30, seed=3))
    fake_images = make_images(20, seed=4)
    samples = tmp_path / 'samples.npz'
    np.savez(samples, arr_0=fake_images)
    result = evaluate_samples_npz(str(samples), str(ref),
                                  feature_extractor=tiny_extractor_cfg,
                                  batch_size=6, device='cpu')
    metric = GenerationMetric(reference=str(ref),
                              feature_extractor=tiny_extractor_cfg,
                              device='cpu')
    metric.process({}, _samples(fake_images))
    expected = metric.evaluate(20)
    assert set(result) == {'FID', 'sFID', 'IS', 'IS_std', 'precision',
                           'recall'}
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-5, abs=1e-9)


def test_reference_dimension_mismatch_is_explained(tmp_path,
                                                   tiny_extractor_cfg,
                                                   make_images):
    np.savez(tmp_path / 'adm.npz', mu=np.zeros(2048), sigma=np.eye(2048))
    metric = GenerationMetric(metric_names=('fid', ),
                              reference=str(tmp_path / 'adm.npz'),
                              feature_extractor=tiny_extractor_cfg,
                              device='cpu')
    metric.process({}, _samples(make_images(4)))
    with pytest.raises(ValueError, match='2048-d .* 16-d'):
        metric.evaluate(4)
