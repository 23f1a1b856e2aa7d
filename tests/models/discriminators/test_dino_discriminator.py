"""DINODiscriminator on a tiny random timm ViT (offline, CPU)."""
import math
import urllib.error

import pytest
import timm
import torch
from torch.nn.utils import parametrize

from decq_plugin.models.discriminators.dino_discriminator import (
    DINODiscriminator, TokenHead)
from decq_plugin.models.encoders.base import MissingPretrainedWeightsError
from decq_plugin.registry import MODELS

TINY_VIT = dict(img_size=32, patch_size=8, depth=4, embed_dim=32,
                num_heads=2)
TINY = dict(model_name='vit_tiny_patch16_224', pretrained=False,
            block_indices=(1, 3), head_channels=16, kernel_size=5,
            input_size=32, model_kwargs=TINY_VIT)


@pytest.fixture
def disc() -> DINODiscriminator:
    torch.manual_seed(0)
    return MODELS.build(dict(type='DINODiscriminator', **TINY))


def _images(n: int = 2, size: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size,
                      generator=torch.Generator().manual_seed(seed))


def test_output_shape(disc):
    assert disc.num_tokens == 16  # (32 / 8) ** 2
    logits = disc(_images(3))
    assert logits.shape == (3, 2 * 16)
    assert torch.isfinite(logits).all()
    # Each image's logits depend only on that image.
    single = disc(_images(3)[1:2])
    assert torch.allclose(single, logits[1:2], atol=1e-5)


def test_feature_net_pruned_and_frozen(disc):
    assert len(disc.feature_net.blocks) == 4  # last tapped block is 3
    assert all(not p.requires_grad for p in disc.feature_net.parameters())
    assert all(p.requires_grad for p in disc.heads.parameters())


def test_grads_to_heads_and_input_not_feature_net(disc):
    x = _images().requires_grad_(True)
    disc(x).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in disc.feature_net.parameters())
    for head in disc.heads:
        for name, p in head.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_detached_input_stores_no_feature_graph(disc):
    feats = disc.features(_images())
    assert len(feats) == 2 and feats[0].shape == (2, 32, 16)
    assert all(not f.requires_grad for f in feats)
    feats = disc.features(_images().requires_grad_(True))
    assert all(f.requires_grad for f in feats)


def test_taps_the_chosen_blocks(disc):
    # Block outputs captured by forward hooks on the timm blocks, after the
    # same resize and normalisation, must equal what the heads receive.
    captured = {}
    handles = [
        disc.feature_net.blocks[i].register_forward_hook(
            lambda m, inp, out, i=i: captured.__setitem__(i, out))
        for i in (1, 3)
    ]
    feats = disc.features(_images(size=32))
    for h in handles:
        h.remove()
    prefix = disc.feature_net.num_prefix_tokens
    for i, f in zip((1, 3), feats):
        assert torch.allclose(f, captured[i][:, prefix:].transpose(1, 2))


def test_input_normalisation_uses_model_statistics(disc):
    cfg = timm.models.get_pretrained_cfg('vit_small_patch8_224.dino')
    assert cfg.mean == (0.485, 0.456, 0.406)  # ImageNet, for DINO
    tiny_cfg = disc.feature_net.pretrained_cfg
    assert torch.allclose(disc.mean.flatten(), torch.tensor(tiny_cfg['mean']))
    assert torch.allclose(disc.std.flatten(), torch.tensor(tiny_cfg['std']))
    assert 'mean' not in disc.state_dict()
    # The ViT sees (x - mean) / std: check through the patch embedding.
    seen = {}
    handle = disc.feature_net.patch_embed.register_forward_hook(
        lambda m, inp, out: seen.__setitem__('x', inp[0]))
    x = _images(size=32)
    disc.features(x)
    handle.remove()
    assert torch.allclose(seen['x'], (x - disc.mean) / disc.std)


def test_spectral_norm_on_every_head_conv(disc):
    convs = [m for m in disc.heads.modules()
             if isinstance(m, torch.nn.Conv1d)]
    assert len(convs) == 3 * len(disc.heads)
    assert all(parametrize.is_parametrized(c, 'weight') for c in convs)
    # The largest singular value of the used weight is about 1.
    disc.train()
    for _ in range(10):
        disc(_images())
    disc.eval()
    weight = convs[1].weight.flatten(1)
    assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(
        1.0, abs=0.05)


def test_feature_net_stays_in_eval_mode(disc):
    parent = torch.nn.Module()
    parent.disc = disc
    parent.train()
    assert not any(m.training for m in disc.feature_net.modules())
    assert all(m.training for m in disc.heads.modules())
    parent.eval()
    assert not any(m.training for m in disc.modules())


def test_token_head_residual_shape():
    head = TokenHead(in_channels=8, channels=6, kernel_size=3)
    assert head(torch.randn(2, 8, 10)).shape == (2, 10)


def test_weights_path_loads_local_file(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model('vit_tiny_patch16_224', pretrained=False,
                               num_classes=0, **TINY_VIT)
    path = tmp_path / 'tiny_vit.pth'
    torch.save(source.state_dict(), path)
    cfg = dict(TINY, pretrained=True, weights_path=str(path))
    disc = DINODiscriminator(**cfg)
    loaded = disc.feature_net.state_dict()
    assert torch.equal(loaded['blocks.2.attn.qkv.weight'],
                       source.state_dict()['blocks.2.attn.qkv.weight'])
    assert torch.equal(loaded['pos_embed'], source.state_dict()['pos_embed'])


def test_pretrained_offline_error_names_the_file(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError('no network')

    # Both of timm's download routes fail; nothing reaches the network.
    monkeypatch.setattr(timm.models._builder, 'load_state_dict_from_hf',
                        offline)
    monkeypatch.setattr(timm.models._builder, 'load_state_dict_from_url',
                        offline)
    with pytest.raises(MissingPretrainedWeightsError) as info:
        DINODiscriminator(pretrained=True, model_kwargs=dict(depth=3),
                          block_indices=(2, ))
    message = str(info.value)
    assert 'vit_small_patch8_224.dino' in message
    assert 'model.safetensors' in message
    assert 'dino_deitsmall8_pretrain.pth' in message
    assert 'weights_path' in message
    missing = tmp_path / 'absent.safetensors'
    with pytest.raises(MissingPretrainedWeightsError, match='absent'):
        DINODiscriminator(weights_path=str(missing))


def test_argument_validation():
    for bad in (dict(block_indices=(3, 1)), dict(block_indices=()),
                dict(block_indices=(1, 4))):
        with pytest.raises(ValueError, match='block_indices'):
            DINODiscriminator(**{**TINY, **bad})
    with pytest.raises(ValueError, match='kernel_size'):
        DINODiscriminator(**{**TINY, 'kernel_size': 4})
    with pytest.raises(ValueError, match='input_size'):
        DINODiscriminator(**{**TINY, 'input_size': 64})
    with pytest.raises(ValueError, match='weights_path'):
        DINODiscriminator(**{**TINY, 'weights_path': 'x.pth'})


def test_full_size_on_meta_device():
    with torch.device('meta'):
        disc = DINODiscriminator(pretrained=False)
        logits = disc(torch.empty(2, 3, 256, 256))
    assert disc.block_indices == [2, 5, 8, 11]
    assert disc.num_tokens == 28 * 28
    assert logits.shape == (2, 4 * 784)
    # DINO ViT-S/8 without its final norm and head: 21.67M parameters.
    vit = sum(p.numel() for p in disc.feature_net.parameters())
    c, n_patch = 384, 28 * 28
    embed = 3 * 8 * 8 * c + c + c + (n_patch + 1) * c  # conv, cls, pos
    block = 2 * 2 * c + (3 * c * c + 3 * c) + (c * c + c) \
        + (4 * c * c + 4 * c) + (4 * c * c + c)
    assert vit == embed + 12 * block
    head = (c * c + c) + 2 * c + (9 * c * c + c) + 2 * c + (c + 1)
    assert sum(p.numel() for p in disc.heads.parameters()) == 4 * head
    assert math.isclose(vit / 1e6, 21.67, abs_tol=0.01)
