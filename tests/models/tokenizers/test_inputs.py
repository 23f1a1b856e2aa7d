"""The tokenizer API refuses wrong inputs with messages that say how to fix
them: uint8 pixels, values outside [0, 1], other sizes, other channel
counts, malformed latents (tiny DecQ, offline, CPU)."""
from pathlib import Path

import pytest
import torch

from decq_plugin.apis import build_tokenizer_from_config
from decq_plugin.models.tokenizers import inputs
from decq_plugin.registry import MODELS

ENCODER = dict(type='TimmViTEncoder',
               model_name='vit_base_patch14_reg4_dinov2', input_size=56, pretrained=False,
               model_kwargs=dict(embed_dim=32, depth=2, num_heads=2))
ROOT = Path(__file__).resolve().parents[3]
DECODER = dict(type='ViTPixelDecoder', patch_size=8,
               arch=dict(width=32, depth=1, num_heads=2, mlp_dim=64))


@pytest.fixture(scope='module')
def tok():
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='DecQTokenizer', encoder=ENCODER, decoder=DECODER,
        condenser=dict(num_queries=2, layers=(0, 1), num_heads=2))).eval()


def _images(size: int = 32) -> torch.Tensor:
    return torch.rand(2, 3, size, size,
                      generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize('method', ['encode', 'reconstruct'])
@pytest.mark.parametrize('images, error, match', [
    ((_images() * 255).to(torch.uint8), TypeError,
     r'float tensor in \[0, 1\], got dtype torch.uint8 \(uint8 pixels: use '
     r'images.float\(\) / 255\)'),
    (_images() * 255, ValueError,
     r'\[0, 1\], got values in \[.*\] \(\[0, 255\] pixels: divide by 255'),
    (_images() * 2 - 1, ValueError,
     r'\[-1, 1\] pixels: use \(images \+ 1\) / 2'),
    (_images() + 0.1, ValueError, r'clamp them'),
    (_images(48), ValueError,
     r'takes 32x32 images \(the size it reconstructs\), got 48x48; '
     r'.*AdmCenterCrop\(32\)'),
    (_images()[:, :1], ValueError, r'3 \(RGB\) channels.*images.expand'),
    (_images().permute(0, 2, 3, 1), ValueError, r'channels last'),
    (_images()[0], ValueError, r'images.unsqueeze\(0\)'),
    (_images().numpy(), TypeError, r'must be a torch.Tensor'),
])
def test_wrong_images_are_refused(tok, method, images, error, match):
    with pytest.raises(error, match=match):
        getattr(tok, method)(images)


def test_nan_is_refused(tok):
    images = _images()
    images[0, 0, 0, 0] = float('nan')
    with pytest.raises(ValueError, match='NaN'):
        tok.encode(images)


def test_values_within_tolerance_are_accepted(tok):
    images = _images()
    images[0, 0, 0, 0] = 1 + inputs.RANGE_TOLERANCE / 2
    images[0, 0, 0, 1] = -inputs.RANGE_TOLERANCE / 2
    with torch.no_grad():
        latents = tok.encode(images)
    assert latents['patch'].shape == (2, 32, 4, 4)
    # the value check can be skipped (no device sync): out-of-range values
    # then go through
    with torch.no_grad():
        tok.encode(images * 255, check_range=False)


def test_range_check_skipped_in_training_forward(tok, monkeypatch):
    calls = []
    monkeypatch.setattr('decq_plugin.models.tokenizers.base.'
                        'check_image_range', lambda *a: calls.append(a))
    with torch.no_grad():
        tok.encode(_images())
        assert len(calls) == 1
        tok(_images())  # the training pass: layout only
    assert len(calls) == 1
    with pytest.raises(ValueError, match='takes 32x32 images'):
        tok(_images(48))


def test_wrong_latents_are_refused(tok):
    with torch.no_grad():
        latents = tok.encode(_images())
    with pytest.raises(ValueError, match=r"keys \['patch', 'query'\], got "
                       r"\['patch'\]"):
        tok.decode({'patch': latents['patch']})
    with pytest.raises(ValueError, match=r"latents\['query'\] must be a "
                       r'float tensor \[B, 2, 32\], got torch.float32 '
                       r'\(2, 2, 16\)'):
        tok.decode(dict(latents, query=latents['query'][..., :16]))
    with pytest.raises(ValueError, match='disagree on the batch size'):
        tok.decode(dict(latents, query=latents['query'][:1]))
    with pytest.raises(TypeError, match='the dict encode'):
        tok.decode(latents['patch'])


def test_api_built_tokenizer_checks_inputs():
    tok = build_tokenizer_from_config(
        str(ROOT / 'configs/demo/decq_tiny_1xb8-16e_demo-64.py'))
    with pytest.raises(ValueError, match='takes 64x64 images'):
        tok.encode(_images(32))


@pytest.mark.parametrize('method', ['encode', 'reconstruct'])
def test_float64_images_are_cast(tok, method):
    images = _images()
    with torch.no_grad():
        want = getattr(tok, method)(images)
        got = getattr(tok, method)(images.double())
    if method == 'encode':
        assert got['patch'].dtype == torch.float32
        torch.testing.assert_close(got['patch'], want['patch'])
        torch.testing.assert_close(got['query'], want['query'])
    else:
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want)


def test_float64_latents_are_cast(tok):
    with torch.no_grad():
        latents = tok.encode(_images())
        want = tok.decode(latents)
        got = tok.decode({k: v.double() for k, v in latents.items()})
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)
