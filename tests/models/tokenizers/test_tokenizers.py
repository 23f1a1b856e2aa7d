"""Tokenizer API (RAE, DecQ and the ablation tokenizers) and the noise
augmentation, on a tiny DINOv2-with-registers layout (offline, CPU).

VFM: width 32, 4 blocks, 56 px -> 4x4 patch grid. Decoder: patch 8 -> 32 px.
"""
import pytest
import torch
import torch.nn.functional as F

from decq_plugin.models.tokenizers.noise_augmentation import noise_augment
from decq_plugin.registry import MODELS

DIM = 32
ENCODER = dict(type='TimmViTEncoder',
               model_name='vit_base_patch14_reg4_dinov2',
               input_size=56, pretrained=False,
               model_kwargs=dict(embed_dim=DIM, depth=4, num_heads=2,
                                 init_values=1.0))
DECODER = dict(type='ViTPixelDecoder', patch_size=8,
               arch=dict(width=32, depth=2, num_heads=2, mlp_dim=64))
CONDENSER = dict(num_queries=3, layers=(0, 2), num_heads=2)


def _images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32,
                      generator=torch.Generator().manual_seed(seed))


def _build(type_: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    cfg = dict(type=type_, encoder=ENCODER, decoder=DECODER)
    if type_ in ('DecQTokenizer', 'VFMFeatConcatTokenizer'):
        cfg['condenser'] = dict(CONDENSER)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _check_decode(tok, latents):
    images = tok.decode(latents)
    assert images.shape == (2, 3, 32, 32)
    assert images.min() >= 0 and images.max() <= 1
    # A decoder whose pixels overshoot still decodes into [0, 1] (clamped),
    # unless asked not.
    head = tok.decoder.head.weight
    saved = head.detach().clone()
    with torch.no_grad():
        head.mul_(50)
    assert tok.decode(latents).min() >= 0 and tok.decode(latents).max() <= 1
    raw = tok.decode(latents, clamp=False)
    assert raw.min() < 0 or raw.max() > 1
    with torch.no_grad():
        head.copy_(saved)
    return images


# -- API ----------------------------------------------------------------------
def test_rae_api():
    tok = _build('RAETokenizer')
    assert tok.num_queries == 0 and tok.image_size == 32
    assert tok.latent_shapes == {'patch': (DIM, 4, 4)}
    latents = tok.encode(_images())
    assert set(latents) == {'patch'}
    assert latents['patch'].shape == (2, DIM, 4, 4)
    # The patch latents are the VFM's tokens on the grid.
    assert torch.equal(latents['patch'],
                       tok.encoder.tokens_to_grid(tok.encoder(_images())))
    _check_decode(tok, latents)
    assert torch.equal(tok.reconstruct(_images()), tok.decode(latents))
    assert tok.last_layer is tok.decoder.head.weight


def test_decq_api():
    tok = _build('DecQTokenizer')
    assert tok.num_queries == 3 and tok.image_size == 32
    assert tok.latent_shapes == {'patch': (DIM, 4, 4), 'query': (3, DIM)}
    assert tok.decoder.num_queries == 3
    latents = tok.encode(_images())
    assert latents['patch'].shape == (2, DIM, 4, 4)
    assert latents['query'].shape == (2, 3, DIM)
    images = _check_decode(tok, latents)
    other = dict(latents, query=torch.randn_like(latents['query']))
    assert not torch.allclose(tok.decode(other), images, atol=1e-4)


def test_training_forward():
    tok = _build('DecQTokenizer', noise_tau=0.8)
    tok.train()
    images = _images()
    out = tok(images, augment=False)
    assert set(out) == {'recon'} and out['recon'].shape == (2, 3, 32, 32)
    # Unclamped, no noise: the raw decoding of the raw latents.
    assert torch.allclose(out['recon'], tok.decode_raw(tok.encode_raw(images)),
                          atol=1e-6)
    noisy = tok(images)['recon']
    assert not torch.allclose(noisy, out['recon'], atol=1e-4)
    tok0 = _build('DecQTokenizer', noise_tau=0.0)
    assert torch.equal(tok0(images)['recon'], tok0(images, augment=False)
                       ['recon'])
    with pytest.raises(ValueError, match='noise_tau'):
        _build('RAETokenizer', noise_tau=-0.1)


def test_trainable_parts_of_decq():
    tok = _build('DecQTokenizer')
    trainable = {n.split('.')[0] for n, p in tok.named_parameters()
                 if p.requires_grad}
    assert trainable == {'condenser', 'decoder'}


def test_vfm_finetune_trains_the_vfm():
    tok = _build('VFMFinetuneTokenizer')
    assert not tok.encoder.frozen
    assert all(p.requires_grad for p in tok.encoder.parameters())
    tok.train()
    assert tok.encoder.training
    assert tok.latent_shapes == {'patch': (DIM, 4, 4)}
    out = tok(_images())
    out['recon'].abs().mean().backward()
    for name, p in tok.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    _check_decode(tok, tok.encode(_images()))


def test_vfm_distill_teacher_and_loss():
    tok = _build('VFMDistillTokenizer', distill_weight=2.0)
    assert all(not p.requires_grad for p in tok.teacher.parameters())
    assert all(p.requires_grad for p in tok.encoder.parameters())
    tok.train()
    assert tok.encoder.training and not tok.teacher.training
    images = _images()
    out = tok(images)
    assert set(out) == {'recon', 'loss_distill'}
    assert out['loss_distill'].item() == 0.0  # student == teacher at init
    teacher_before = tok.teacher(images)
    with torch.no_grad():
        tok.encoder.vit.patch_embed.proj.weight.add_(0.05)
    out = tok(images)
    assert out['loss_distill'].item() > 0
    assert torch.equal(tok.teacher(images), teacher_before)
    # The loss is distill_weight * MSE(student latents, teacher latents).
    student = tok.encode(images)['patch']
    ref = 2.0 * F.mse_loss(student,
                           tok.encoder.tokens_to_grid(teacher_before))
    assert torch.allclose(out['loss_distill'], ref, rtol=1e-5)
    out['loss_distill'].backward()
    assert tok.encoder.vit.patch_embed.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in tok.teacher.parameters())
    with pytest.raises(ValueError, match='distill_weight'):
        _build('VFMDistillTokenizer', distill_weight=-1.0)


def test_vfm_feat_concat_latents():
    tok = _build('VFMFeatConcatTokenizer', bottleneck_dim=5)
    assert tok.num_queries == 0
    assert tok.condenser.num_queries == 16  # one query per patch
    assert tok.latent_shapes == {'patch': (DIM + 5, 4, 4)}
    assert tok.decoder.patch_in.in_features == DIM + 5
    assert not hasattr(tok.decoder, 'query_in')
    images = _images()
    latents = tok.encode(images)
    assert set(latents) == {'patch'}
    assert latents['patch'].shape == (2, DIM + 5, 4, 4)
    # First C channels: the VFM's patch tokens; then query i (row-major)
    # through the bottleneck at patch position i.
    with tok.condenser.condense(tok.encoder, 2):
        patches = tok.encoder(images)
        queries = tok.condenser.result()
    assert torch.equal(latents['patch'][:, :DIM],
                       tok.encoder.tokens_to_grid(patches))
    extra = tok.bottleneck(queries)  # [B, 16, 5]
    assert torch.allclose(latents['patch'][:, DIM:, 2, 1], extra[:, 2 * 4 + 1],
                          atol=1e-6)
    _check_decode(tok, latents)
    assert all(not p.requires_grad for p in tok.encoder.parameters())
    with pytest.raises(ValueError, match='bottleneck_dim'):
        _build('VFMFeatConcatTokenizer', bottleneck_dim=0)


# -- noise augmentation -------------------------------------------------------
def _latents(b: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return {'patch': torch.randn(b, 64, 16, 16, generator=gen,
                                 dtype=torch.float64),
            'query': torch.randn(b, 256, 64, generator=gen,
                                 dtype=torch.float64)}


def test_noise_tau_zero_is_identity():
    z = _latents()
    out = noise_augment(z, 0.0)
    assert set(out) == set(z)
    assert all(torch.equal(out[k], z[k]) for k in z)
    with pytest.raises(ValueError, match='tau'):
        noise_augment(z, -0.5)


def test_noise_same_sigma_for_patch_and_query():
    z = _latents()
    out = noise_augment(z, 0.8, torch.Generator().manual_seed(1))
    std = {k: (out[k] - z[k]).flatten(1).std(dim=1) for k in z}
    # One sigma per sample, shared by both latent types (16384 values each:
    # the estimates agree to ~1%), and different between samples.
    assert torch.allclose(std['patch'] / std['query'], torch.ones(6).double(),
                          atol=0.05)
    assert std['patch'].max() / std['patch'].min() > 1.5
    assert (std['patch'] < 0.8 * 1.05).all()
    # The same draws by hand: sigma = tau * U(0,1) per sample, then eps.
    gen = torch.Generator().manual_seed(1)
    sigma = 0.8 * torch.rand(6, generator=gen, dtype=torch.float64)
    for key in ('patch', 'query'):
        eps = torch.randn(z[key].shape, generator=gen, dtype=torch.float64)
        shape = (-1, ) + (1, ) * (z[key].dim() - 1)
        assert torch.allclose(out[key], z[key] + sigma.view(shape) * eps)


def test_noise_std_scales_with_tau():
    z = _latents()
    a = noise_augment(z, 0.4, torch.Generator().manual_seed(2))
    b = noise_augment(z, 0.8, torch.Generator().manual_seed(2))
    for key in z:
        assert torch.allclose(2 * (a[key] - z[key]), b[key] - z[key])
    # sigma ~ tau * U(0, 1): mean tau / 2, range [0, tau].
    zeros = {'patch': torch.zeros(4000, 1, 16, 16, dtype=torch.float64)}
    sigma = noise_augment(zeros, 0.8, torch.Generator().manual_seed(3))[
        'patch'].flatten(1).std(dim=1)
    assert abs(sigma.mean().item() - 0.4) < 0.02
    assert sigma.min() < 0.05 and sigma.max() > 0.7


def test_tokenizer_noise_uses_its_tau():
    tok = _build('DecQTokenizer', noise_tau=0.3)
    z = _latents()
    out = tok.noise_augment(z, torch.Generator().manual_seed(4))
    ref = noise_augment(z, 0.3, torch.Generator().manual_seed(4))
    assert all(torch.equal(out[k], ref[k]) for k in z)
