"""IS, precision/recall, GenerationMetric and the .npz evaluation."""
import numpy as np
import pytest
from mmengine.evaluator import Evaluator
from mmengine.registry import init_default_scope
from PIL import Image

from decq_plugin.evaluation.fid import feature_statistics, frechet_distance
from decq_plugin.evaluation.inception import (LazyFeatureExtractor,
                                              uint8_nhwc_to_float)
from decq_plugin.evaluation.metrics.generation import (
    GenerationMetric, evaluate_samples_npz, inception_score, precision_recall)


def test_inception_score_extremes():
    mean, std = inception_score(np.zeros((40, 7)), num_splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std < 1e-12
    # confident and uniformly spread over 8 classes within each split
    labels = np.tile(np.arange(8), 20)
    logits = np.full((160, 8), -30.0)
    logits[np.arange(160), labels] = 30.0
    mean, _ = inception_score(logits, num_splits=10)
    assert mean == pytest.approx(8.0, rel=1e-6)
    # confident but always the same class: 1 again
    assert inception_score(logits[labels == 3], 4)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match='num_splits'):
        inception_score(np.zeros((5, 3)), num_splits=10)


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
    expected_is = inception_score(fake_logits, 10)[0]
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
    assert set(result) == {'FID', 'IS', 'IS_std', 'precision', 'recall'}
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
