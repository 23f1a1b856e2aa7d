"""Frozen VFM adapters (timm and mmpretrain) on tiny random ViTs, offline.

The references are computed here from the libraries' own forwards: resize
(bicubic) and ImageNet normalisation written out by hand, prefix tokens
dropped, and a LayerNorm without affine parameters.
"""
import time

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from decq_plugin.models.encoders.base import MissingPretrainedWeightsError
from decq_plugin.models.encoders.mmpretrain_encoder import MMPretrainViTEncoder
from decq_plugin.models.encoders.timm_encoder import TimmViTEncoder
from decq_plugin.registry import MODELS

NAME = 'vit_base_patch14_reg4_dinov2'
HF_REPO = 'timm/vit_base_patch14_reg4_dinov2.lvd142m'
SIZE = 56  # 4x4 grid of 14-px patches
# init_values=1: the layer scales of DINOv2 (1e-5 at init) would make the
# random blocks near-identities and hide mistakes in how they are run.
TINY = dict(embed_dim=64, depth=4, num_heads=4, init_values=1.0)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
MMPRE_ARCH = dict(embed_dims=64, num_layers=4, num_heads=4,
                  feedforward_channels=128)


def _images(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size,
                      generator=torch.Generator().manual_seed(seed))


def _timm_encoder(seed: int = 0, **kwargs) -> TimmViTEncoder:
    torch.manual_seed(seed)
    cfg = dict(type='TimmViTEncoder', model_name=NAME, input_size=SIZE,
               pretrained=False, model_kwargs=TINY)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _timm_model(img_size: int = SIZE, seed: int = 1) -> nn.Module:
    """A plain timm ViT of the tiny layout (with its affine final norm)."""
    torch.manual_seed(seed)
    model = timm.create_model(NAME, pretrained=False, num_classes=0,
                              img_size=img_size, **TINY)
    # Non-trivial affine final norm: the encoder must not apply it.
    nn.init.normal_(model.norm.weight, 1.0, 0.5)
    nn.init.normal_(model.norm.bias, 0.0, 0.5)
    return model.eval()


def _hand_preprocess(images: torch.Tensor) -> torch.Tensor:
    x = F.interpolate(images, size=(SIZE, SIZE), mode='bicubic',
                      align_corners=False)
    return (x - MEAN) / STD


def _timm_reference(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """timm's forward_features, prefix dropped, affine-free final LN."""
    with torch.no_grad():
        tokens = model.forward_features(_hand_preprocess(images))
        # forward_features ends with the affine norm; redo it without.
        model_norm, model.norm = model.norm, nn.Identity()
        try:
            raw = model.forward_features(_hand_preprocess(images))
        finally:
            model.norm = model_norm
    assert not torch.allclose(tokens, F.layer_norm(raw, (raw.shape[-1], ),
                                                   eps=1e-6), atol=1e-3)
    patches = raw[:, model.num_prefix_tokens:]
    return F.layer_norm(patches, (patches.shape[-1], ), eps=1e-6)


# -- timm adapter -------------------------------------------------------------
def test_timm_output_shape_and_prefix_dropped():
    enc = _timm_encoder()
    assert enc.num_prefix_tokens == 5  # CLS + 4 registers
    assert enc.grid_size == (4, 4) and enc.num_patches == 16
    assert enc.embed_dim == 64 and enc.num_blocks == 4
    out = enc(_images(3))
    assert out.shape == (3, 16, 64)
    # The last block emits 5 + 16 tokens; the output is the last 16, normed.
    raw = enc.forward_blocks(_images(3))
    assert raw.shape == (3, 21, 64)
    assert torch.allclose(out, F.layer_norm(raw[:, 5:], (64, ), eps=1e-6),
                          atol=1e-6)
    assert enc.tokens_to_grid(out).shape == (3, 64, 4, 4)
    # tokens_to_grid is row-major: token i*4+j sits at (i, j).
    grid = enc.tokens_to_grid(out)
    assert torch.equal(grid[:, :, 2, 1], out[:, 2 * 4 + 1])


def test_timm_equals_forward_features_without_affine_norm():
    source = _timm_model()
    enc = _timm_encoder()
    missing, unexpected = enc.vit.load_state_dict(source.state_dict(),
                                                  strict=False)
    assert not missing and set(unexpected) == {'norm.weight', 'norm.bias'}
    images = _images(2)
    out = enc(images)
    ref = _timm_reference(source, images)
    assert torch.allclose(out, ref, atol=1e-5)
    # Affine-free: every token has zero mean and unit variance over channels.
    assert torch.allclose(out.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(out.var(-1, unbiased=False), torch.ones(2, 16),
                          atol=1e-3)


def test_timm_bicubic_resize_to_input_size():
    enc = _timm_encoder()
    images = _images(2, size=70)
    bicubic = F.interpolate(images, size=(SIZE, SIZE), mode='bicubic',
                            align_corners=False)
    bilinear = F.interpolate(images, size=(SIZE, SIZE), mode='bilinear',
                             align_corners=False)
    out = enc(images)
    assert torch.allclose(out, enc(bicubic), atol=1e-5)
    assert not torch.allclose(out, enc(bilinear), atol=1e-3)
    assert torch.allclose(enc.preprocess(images), (bicubic - MEAN) / STD,
                          atol=1e-6)
    # Images already at the input size are only normalised.
    assert torch.equal(enc.preprocess(bicubic), (bicubic - MEAN) / STD)


def test_timm_imagenet_normalisation():
    enc = _timm_encoder()
    assert torch.allclose(enc.mean, MEAN) and torch.allclose(enc.std, STD)
    at_mean = MEAN.expand(1, 3, SIZE, SIZE).clone()
    assert torch.allclose(enc.preprocess(at_mean), torch.zeros_like(at_mean),
                          atol=1e-6)
    one_std = (MEAN + STD).expand(1, 3, SIZE, SIZE).clone()
    assert torch.allclose(enc.preprocess(one_std), torch.ones_like(one_std),
                          atol=1e-6)
    # Normalisation statistics are not weights: not in the state dict.
    assert not {'mean', 'std'} & set(enc.state_dict())
    with pytest.raises(ValueError, match='images'):
        enc.preprocess(torch.rand(2, 1, SIZE, SIZE))


def test_timm_frozen():
    enc = _timm_encoder()
    params = list(enc.parameters())
    assert params and all(not p.requires_grad for p in params)
    assert not enc.training
    enc.train()
    assert not any(m.training for m in enc.modules())
    parent = nn.Sequential(enc)
    parent.train()
    assert parent.training and not any(m.training for m in enc.modules())
    images = _images(2).requires_grad_(True)
    out = enc(images)
    assert out.grad_fn is None and not out.requires_grad
    # The final affine norm and the head were dropped, not merely unused.
    assert isinstance(enc.vit.norm, nn.Identity)
    assert isinstance(enc.vit.head, nn.Identity)


def test_timm_unfrozen_trains():
    enc = _timm_encoder(frozen=False)
    assert all(p.requires_grad for p in enc.parameters())
    enc.train()
    assert enc.training
    out = enc(_images(2))
    assert out.grad_fn is not None
    out.square().mean().backward()
    assert enc.vit.patch_embed.proj.weight.grad.abs().sum() > 0


def test_timm_unknown_model_name():
    with pytest.raises(ValueError, match="model_name='vit_nonexistent_xyz'"):
        TimmViTEncoder(model_name='vit_nonexistent_xyz', pretrained=False)


def test_timm_pretrained_offline_error_is_clear_and_fast():
    start = time.monotonic()
    with pytest.raises(MissingPretrainedWeightsError) as info:
        TimmViTEncoder(pretrained=True, input_size=SIZE, model_kwargs=TINY)
    assert time.monotonic() - start < 15  # no ~50 s of hub retries
    message = str(info.value)
    assert HF_REPO in message
    assert 'model.safetensors' in message
    assert 'weights_path' in message
    assert isinstance(info.value, FileNotFoundError)


def test_timm_missing_weights_path_named(tmp_path):
    path = str(tmp_path / 'nowhere' / 'dinov2.safetensors')
    with pytest.raises(MissingPretrainedWeightsError, match='nowhere'):
        TimmViTEncoder(pretrained=True, weights_path=path, input_size=SIZE,
                       model_kwargs=TINY)


@pytest.mark.parametrize('fmt', ['safetensors', 'pth'])
def test_timm_weights_path_loads_the_file(tmp_path, fmt):
    source = _timm_model()
    path = str(tmp_path / f'weights.{fmt}')
    if fmt == 'safetensors':
        from safetensors.torch import save_file
        save_file(source.state_dict(), path)
    else:
        torch.save(source.state_dict(), path)
    enc = _timm_encoder(seed=123, pretrained=True, weights_path=path)
    for name, value in enc.vit.state_dict().items():
        assert torch.equal(value, source.state_dict()[name]), name
    images = _images(2)
    assert torch.allclose(enc(images), _timm_reference(source, images),
                          atol=1e-5)
    assert all(not p.requires_grad for p in enc.parameters())


def test_timm_weights_path_at_another_resolution(tmp_path):
    """A checkpoint made at another size (DINOv2's is 518 px) loads, its
    position embedding resampled to the encoder's grid."""
    from safetensors.torch import save_file
    source = _timm_model(img_size=70)  # 5x5 grid
    path = str(tmp_path / 'model.safetensors')
    save_file(source.state_dict(), path)
    enc = _timm_encoder(seed=123, pretrained=True, weights_path=path)
    assert enc.vit.pos_embed.shape == (1, 16, 64)
    assert torch.equal(enc.vit.blocks[2].attn.qkv.weight,
                       source.blocks[2].attn.qkv.weight)
    assert torch.equal(enc.vit.reg_token, source.reg_token)


# -- mmpretrain adapter -------------------------------------------------------
def _mmpretrain_encoder(seed: int = 0, **kwargs) -> MMPretrainViTEncoder:
    torch.manual_seed(seed)
    cfg = dict(type='MMPretrainViTEncoder', input_size=SIZE,
               pretrained=False,
               backbone=dict(arch=MMPRE_ARCH, layer_scale_init_value=1.0))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _mmpretrain_model(seed: int = 1) -> nn.Module:
    from mmpretrain.models import VisionTransformer
    torch.manual_seed(seed)
    model = VisionTransformer(arch=MMPRE_ARCH, patch_size=14, img_size=SIZE,
                              layer_scale_init_value=1.0, out_type='raw',
                              final_norm=False)
    model.eval()  # mmpretrain's train() returns None
    return model


def _mmpretrain_reference(model: nn.Module,
                          images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        tokens = model(_hand_preprocess(images))[-1]
    assert tokens.shape[1] == 1 + 16
    return F.layer_norm(tokens[:, 1:], (tokens.shape[-1], ), eps=1e-6)


def test_mmpretrain_equals_own_forward():
    enc = _mmpretrain_encoder()
    assert enc.num_prefix_tokens == 1 and enc.embed_dim == 64
    assert enc.num_blocks == 4 and enc.grid_size == (4, 4)
    source = _mmpretrain_model()
    enc.vit.load_state_dict(source.state_dict())
    images = _images(2)
    out = enc(images)
    assert out.shape == (2, 16, 64)
    assert torch.allclose(out, _mmpretrain_reference(source, images),
                          atol=1e-5)
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()
    assert not any(m.training for m in enc.modules())


def test_mmpretrain_missing_weights():
    with pytest.raises(MissingPretrainedWeightsError, match='weights_path'):
        MMPretrainViTEncoder(pretrained=True, input_size=SIZE,
                             backbone=dict(arch=MMPRE_ARCH))


def test_mmpretrain_weights_path_named(tmp_path):
    path = str(tmp_path / 'absent_vit.pth')
    with pytest.raises(MissingPretrainedWeightsError, match='absent_vit.pth'):
        MMPretrainViTEncoder(pretrained=True, weights_path=path,
                             input_size=SIZE,
                             backbone=dict(arch=MMPRE_ARCH))


def test_mmpretrain_weights_path_loads_backbone_keys(tmp_path):
    source = _mmpretrain_model()
    path = str(tmp_path / 'vit.pth')
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    state['head.fc.weight'] = torch.zeros(3, 64)  # other parts are ignored
    torch.save({'state_dict': state}, path)
    enc = _mmpretrain_encoder(seed=5, pretrained=True, weights_path=path)
    images = _images(2)
    assert torch.allclose(enc(images), _mmpretrain_reference(source, images),
                          atol=1e-5)
    # A checkpoint of something else is refused.
    other = str(tmp_path / 'other.pth')
    torch.save({'state_dict': {'backbone.foo': torch.zeros(1)}}, other)
    with pytest.raises(ValueError, match='missing keys'):
        _mmpretrain_encoder(pretrained=True, weights_path=other)


# -- other VFMs: prefix tokens, pre-norm, mean/std, tagged names -------------
OTHER_VFMS = {
    # name: (prefix tokens, mean of the weights)
    'vit_base_patch16_siglip_256.v2_webli': (0, (0.5, 0.5, 0.5)),
    'vit_base_patch16_224.mae': (1, (0.485, 0.456, 0.406)),
    'vit_base_patch16_clip_quickgelu_224.openai': (
        1, (0.48145466, 0.4578275, 0.40821073)),
}


@pytest.mark.parametrize('name', sorted(OTHER_VFMS))
def test_other_vfms_match_timm_trunk(name):
    """Patch latents = the timm model's own last-block tokens (its prefix
    dropped, CLIP's pre-norm applied), affine-free LayerNorm, with the
    weights' mean/std."""
    prefix, mean = OTHER_VFMS[name]
    torch.manual_seed(0)
    enc = MODELS.build(dict(type='TimmViTEncoder', model_name=name,
                            input_size=64, pretrained=False,
                            model_kwargs=dict(embed_dim=64, depth=3,
                                              num_heads=4)))
    assert enc.num_prefix_tokens == prefix and enc.grid_size == (4, 4)
    assert torch.allclose(enc.mean.flatten(), torch.tensor(mean))
    assert getattr(enc.vit, 'attn_pool', None) is None  # SigLIP's MAP head
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, num_classes=0,
                            img_size=64, embed_dim=64, depth=3, num_heads=4)
    ref.eval()
    x = _images()
    with torch.no_grad():
        normed = (x - torch.tensor(mean).view(1, 3, 1, 1)) / \
            enc.std.view(1, 3, 1, 1)
        tokens = ref.blocks(ref.norm_pre(ref._pos_embed(
            ref.patch_embed(normed))))[:, prefix:]
    want = F.layer_norm(tokens, (64, ), eps=1e-6)
    assert torch.allclose(enc(x), want, atol=1e-5)


def test_tagged_and_untagged_names():
    kwargs = dict(type='TimmViTEncoder', input_size=64, pretrained=False,
                  model_kwargs=dict(embed_dim=32, depth=1, num_heads=2))
    for name in ('vit_base_patch16_224.mae', 'vit_base_patch16_224'):
        assert MODELS.build(dict(kwargs, model_name=name)).patch_size == 16
    with pytest.raises(ValueError, match="not the pretrained tag 'nope'"):
        MODELS.build(dict(kwargs, model_name='vit_base_patch16_224.nope'))
