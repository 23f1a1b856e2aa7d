"""Feature extractors: the FID Inception-v3 wrapper and the tiny one."""
import numpy as np
import pytest
import torch

import decq_plugin.evaluation.inception as inception
from decq_plugin.evaluation.inception import (
    INCEPTION_WEIGHTS_FILE, InceptionV3FeatureExtractor,
    InceptionWeightsError, LazyFeatureExtractor, RandomConvFeatureExtractor,
    build_feature_extractor, uint8_nhwc_to_float)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache and a download that fails at once."""
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    calls = []

    def no_network(url, dst):
        calls.append((url, dst))
        raise OSError('network is unreachable')

    monkeypatch.setattr(inception, '_download_weights', no_network)
    return calls


def test_offline_inception_raises_clear_error(empty_hub, tmp_path):
    with pytest.raises(InceptionWeightsError) as info:
        InceptionV3FeatureExtractor()
    message = str(info.value)
    assert INCEPTION_WEIGHTS_FILE in message
    assert 'weights_path' in message
    assert str(tmp_path / 'hub' / 'checkpoints') in message
    assert len(empty_hub) == 1 and empty_hub[0][0].endswith(
        INCEPTION_WEIGHTS_FILE)

    with pytest.raises(InceptionWeightsError, match='allow_download=False'):
        InceptionV3FeatureExtractor(allow_download=False)
    with pytest.raises(InceptionWeightsError, match='does not exist'):
        InceptionV3FeatureExtractor(weights_path=str(tmp_path / 'nope.pth'))
    assert len(empty_hub) == 1  # neither of these tried the network


def _random_inception_weights(path, monkeypatch) -> None:
    """Save a randomly initialised state dict of torch-fidelity's network
    (its constructor is made to skip loading, for this test only)."""
    from torch_fidelity import feature_extractor_inceptionv3 as tfi
    with monkeypatch.context() as patch:
        patch.setattr(tfi, 'load_state_dict_from_url', lambda *a, **k: {})
        patch.setattr(tfi.FeatureExtractorInceptionV3, 'load_state_dict',
                      lambda self, state_dict: None)
        net = tfi.FeatureExtractorInceptionV3('inception-v3-compat', ['2048'])
    torch.save(net.state_dict(), path)


def test_inception_from_local_weights_file(empty_hub, tmp_path, monkeypatch):
    path = tmp_path / INCEPTION_WEIGHTS_FILE
    _random_inception_weights(path, monkeypatch)
    model = build_feature_extractor(
        dict(type='InceptionV3FeatureExtractor', weights_path=str(path)))
    assert isinstance(model, InceptionV3FeatureExtractor)
    assert not empty_hub  # no download attempt
    reference = torch.load(path, weights_only=True)
    loaded = model.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.items())
    images = torch.round(torch.rand(1, 3, 32, 32) * 255) / 255
    # the second copy differs by less than half an 8-bit level
    features, logits = model(torch.cat([images, images + 1e-3]))
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    assert (features >= 0).all()  # pool features after ReLU
    # logits are fc(features) without the bias (torch-fidelity's IS logits)
    torch.testing.assert_close(logits, features @ model.net.fc.weight.T)
    # input is quantised to uint8 first: sub-level noise changes nothing
    assert torch.equal(features[0], features[1])


def test_inception_spatial_features_are_adms_mixed_6_conv(
        empty_hub, tmp_path, monkeypatch):
    """ADM's sFID features: ``mixed_6/conv`` (torch-fidelity's
    ``Mixed_6d.branch1x1``), 17x17, channels [:7] in TF's NHWC order."""
    from torch_fidelity.interpolate_compat_tensorflow import \
        interpolate_bilinear_2d_like_tensorflow1x
    path = tmp_path / INCEPTION_WEIGHTS_FILE
    _random_inception_weights(path, monkeypatch)
    model = InceptionV3FeatureExtractor(weights_path=str(path), spatial=True)
    images = torch.round(torch.rand(2, 3, 40, 40) * 255) / 255
    features, logits, spatial = model(images)
    assert spatial.shape == (2, 17 * 17 * 7)
    net = model.net
    with torch.no_grad():
        x = interpolate_bilinear_2d_like_tensorflow1x(
            torch.round(images * 255), size=(299, 299), align_corners=False)
        x = (x - 128) / 128
        for name in ('Conv2d_1a_3x3', 'Conv2d_2a_3x3', 'Conv2d_2b_3x3',
                     'MaxPool_1', 'Conv2d_3b_1x1', 'Conv2d_4a_3x3',
                     'MaxPool_2', 'Mixed_5b', 'Mixed_5c', 'Mixed_5d',
                     'Mixed_6a', 'Mixed_6b', 'Mixed_6c'):
            x = getattr(net, name)(x)
        conv = net.Mixed_6d.branch1x1(x).numpy()  # [N, 192, 17, 17]
    want = conv.transpose(0, 2, 3, 1)[..., :7].reshape(2, -1)
    np.testing.assert_allclose(spatial.numpy(), want, rtol=1e-5, atol=1e-5)
    plain = InceptionV3FeatureExtractor(weights_path=str(path))(images)
    assert len(plain) == 2 and torch.equal(plain[0], features)


def test_random_extractor_deterministic_and_shapes():
    images = torch.rand(4, 3, 48, 40)
    state = torch.random.get_rng_state()
    a = RandomConvFeatureExtractor(feature_dim=12, num_classes=7, seed=3)
    b = RandomConvFeatureExtractor(feature_dim=12, num_classes=7, seed=3)
    c = RandomConvFeatureExtractor(feature_dim=12, num_classes=7, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    fa, la = a(images)
    fb, lb = b(images)
    fc, _ = c(images)
    assert fa.shape == (4, 12) and la.shape == (4, 7)
    assert torch.equal(fa, fb) and torch.equal(la, lb)
    assert not torch.allclose(fa, fc)
    # different images give different features
    assert (fa[0] - fa[1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match='feature_dim'):
        RandomConvFeatureExtractor(feature_dim=0)


def test_build_feature_extractor_variants(tiny_extractor_cfg):
    built = build_feature_extractor(tiny_extractor_cfg)
    assert isinstance(built, RandomConvFeatureExtractor)

    def fn(images):
        return images.mean(dim=(2, 3)), images.mean(dim=(2, 3))[:, :2]

    assert build_feature_extractor(fn) is fn
    with pytest.raises(TypeError, match='feature_extractor'):
        build_feature_extractor(3)

    lazy = LazyFeatureExtractor(fn, batch_size=3, device='cpu')
    images = torch.rand(7, 3, 8, 8)
    feats, logits = lazy(images)
    assert feats.shape == (7, 3) and logits.shape == (7, 2)
    torch.testing.assert_close(torch.from_numpy(feats),
                               images.mean(dim=(2, 3)))
    with pytest.raises(ValueError, match=r'\[N, 3, H, W\]'):
        lazy(torch.rand(2, 8, 8))


def test_uint8_conversion_round_trips():
    array = torch.randint(0, 256, (3, 5, 6, 3), dtype=torch.uint8).numpy()
    images = uint8_nhwc_to_float(array)
    assert images.shape == (3, 3, 5, 6)
    back = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert torch.equal(back, torch.from_numpy(array))
