"""LatentDiffusionModel with tiny random tokenizers and a tiny DiT-DH."""
import copy
import itertools

import pytest
import torch
from mmengine.dataset import default_collate
from mmengine.runner import Runner
from torch.utils.data import Dataset

from decq_plugin.datasets.latent_dataset import (CachedLatentDataset,
                                                 LatentShardWriter)
from decq_plugin.models.diffusion.generation_model import LatentDiffusionModel
from decq_plugin.models.diffusion.samplers import EulerSampler
from decq_plugin.registry import MODELS

NUM_CLASSES = 4
IMAGE = 32
# Tiny DINOv2-layout VFM: 28 px input, patch 14 -> a 2x2 grid of 32 channels.
ENCODER = dict(type='TimmViTEncoder', pretrained=False, input_size=28,
               model_kwargs=dict(embed_dim=32, depth=4, num_heads=2))
DECODER = dict(type='ViTPixelDecoder', patch_size=16,
               arch=dict(width=32, depth=1, num_heads=2, mlp_dim=64))
RAE_TOK = dict(type='RAETokenizer', encoder=ENCODER, decoder=DECODER)
DECQ_TOK = dict(type='DecQTokenizer', encoder=ENCODER, decoder=DECODER,
                condenser=dict(type='QueryCondenser', num_queries=2,
                               layers=(1, 3), num_heads=2))
DIT = dict(type='DiTDH', arch=dict(body_width=32, body_depth=1, body_heads=2,
                                   head_width=32, head_depth=1, head_heads=2))
_names = itertools.count()


def build(tokenizer=DECQ_TOK, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs.setdefault('sampler', dict(type='EulerSampler', num_points=4))
    kwargs.setdefault('num_classes', NUM_CLASSES)
    return LatentDiffusionModel(tokenizer=tokenizer, denoiser=DIT, **kwargs)


def images(n=4, seed=0):
    return torch.rand(n, 3, IMAGE, IMAGE,
                      generator=torch.Generator().manual_seed(seed))


def randomize(module, seed, std=0.1):
    """Non-zero weights everywhere (a fresh DiT predicts exactly 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


class TinyImages(Dataset):
    def __init__(self, n=8):
        self.x, self.y = images(n), torch.arange(n) % NUM_CLASSES

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i],
                    data_samples=dict(gt_label=int(self.y[i])))


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize('tokenizer', [RAE_TOK, DECQ_TOK],
                         ids=['rae', 'decq'])
def test_trains_through_the_runner(tmp_path, tokenizer):
    model = build(tokenizer)
    tok_before, dit_before = snapshot(model.tokenizer), snapshot(
        model.denoiser)
    runner = Runner(
        model=model, work_dir=str(tmp_path),
        experiment_name=f'gen_test_{next(_names)}',
        train_dataloader=dict(
            dataset=TinyImages(), batch_size=4, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=3),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        default_hooks=dict(checkpoint=None, logger=dict(
            type='LoggerHook', interval=1)),
        default_scope='decq_plugin', randomness=dict(seed=0),
        log_level='WARNING')
    runner.train()
    scalars = runner.message_hub.log_scalars
    assert torch.isfinite(torch.tensor(scalars['train/loss'].current()))
    if tokenizer is DECQ_TOK:
        assert 'train/mse_query' in scalars
    # The denoiser learned; every value is finite.
    changed = [k for k, v in model.denoiser.state_dict().items()
               if not torch.equal(v, dit_before[k])]
    assert len(changed) > len(dit_before) // 2
    assert all(torch.isfinite(p).all() for p in model.denoiser.parameters())
    # The tokenizer is frozen: no grads, unchanged weights, eval mode.
    assert all(not p.requires_grad and p.grad is None
               for p in model.tokenizer.parameters())
    assert all(torch.equal(v, tok_before[k])
               for k, v in model.tokenizer.state_dict().items())
    model.train()
    assert model.denoiser.training and not model.tokenizer.training


def test_loss_decreases_on_a_fixed_batch():
    model = build(RAE_TOK)
    batch = dict(inputs=images(4), data_samples=dict(
        gt_label=torch.arange(4)))
    optim = torch.optim.Adam(model.denoiser.parameters(), lr=3e-3)
    model.train()
    losses = []
    for step in range(12):
        torch.manual_seed(step % 2)  # two fixed (t, noise) draws
        loss = model(**batch, mode='loss')['loss']
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0] and losses[-2] < 0.9 * losses[1]
    assert all(p.grad is None for p in model.tokenizer.parameters())


def test_cached_latents_and_images_give_the_same_loss(tmp_path):
    model = build(DECQ_TOK).train()
    randomize(model.denoiser, 1)
    x, y = images(4), torch.tensor([3, 1, 0, 2])
    torch.manual_seed(7)
    from_images = model(x, dict(gt_label=y), mode='loss')
    # Latents written to disk and read back as a batch (float32: exact).
    with LatentShardWriter(str(tmp_path), shard_size=3) as writer:
        writer.add(model.encode(x), y)
    dataset = CachedLatentDataset(str(tmp_path), use_flip=False)
    batch = default_collate([dataset[i] for i in range(4)])
    assert isinstance(batch['inputs'], dict)
    assert set(batch['inputs']) == {'patch', 'query'}
    torch.manual_seed(7)
    from_latents = model(**batch, mode='loss')
    assert set(from_images) == {'loss', 'mse_patch', 'mse_query'}
    for key in from_images:
        assert torch.equal(from_images[key], from_latents[key]), key
    torch.manual_seed(8)
    other = model(x, dict(gt_label=y), mode='loss')
    assert not torch.equal(other['loss'], from_images['loss'])


def test_class_dropout_is_the_denoisers():
    model = build(RAE_TOK)
    assert model.denoiser.y_embedder.dropout == pytest.approx(0.1)
    assert model.denoiser.null_class == NUM_CLASSES == model.num_classes
    assert not hasattr(model, 'class_dropout')


@pytest.mark.parametrize('tokenizer', [RAE_TOK, DECQ_TOK],
                         ids=['rae', 'decq'])
def test_predict_images_in_unit_range(tokenizer):
    model = build(tokenizer).eval()
    randomize(model.denoiser, 2)
    samples = dict(gt_label=torch.tensor([0, 3, 1]),
                   seed=torch.tensor([10, 11, 12]))
    out = model(None, samples, mode='predict')
    assert len(out) == 3
    for item, label in zip(out, (0, 3, 1)):
        assert item['pred'].shape == (3, IMAGE, IMAGE)
        assert item['pred'].dtype == torch.float32
        assert 0 <= item['pred'].min() and item['pred'].max() <= 1
        assert item['gt_label'] == label and isinstance(label, int)
    assert out[0]['pred'].std() > 0
    # Per-sample seeds: an image does not depend on its batch.
    alone = model(None, dict(gt_label=torch.tensor([3]),
                             seed=torch.tensor([11])), mode='predict')
    assert torch.allclose(alone[0]['pred'], out[1]['pred'], atol=1e-5)
    again = model(None, samples, mode='predict')
    assert all(torch.equal(a['pred'], b['pred']) for a, b in zip(out, again))
    # Without seeds the noise comes from torch's RNG.
    torch.manual_seed(0)
    a = model(None, dict(gt_label=torch.tensor([1, 2])), mode='tensor')
    torch.manual_seed(0)
    b = model(None, dict(gt_label=torch.tensor([1, 2])), mode='tensor')
    assert a.shape == (2, 3, IMAGE, IMAGE) and torch.equal(a, b)


def test_sample_latents_noise_generator_and_shift():
    model = build(DECQ_TOK, loss=dict(type='FlowMatchingLoss', shift=2.0))
    randomize(model.denoiser, 3)
    labels = torch.tensor([0, 1])
    noise = model.make_noise(2, torch.Generator().manual_seed(0))
    assert noise['patch'].shape == (2, 32, 2, 2)
    assert noise['query'].shape == (2, 2, 32)
    model.train()  # sampling switches the denoiser to eval by itself
    lat = model.sample_latents(labels, noise=noise)
    assert model.denoiser.training
    assert {k: v.shape for k, v in lat.items()} == {
        k: v.shape for k, v in noise.items()}
    # The sampler (no shift of its own) uses the loss's shift.
    want = EulerSampler(num_points=4, shift=2.0)(
        model.denoiser.eval(), noise, labels)
    assert all(torch.allclose(lat[k], want[k], atol=1e-6) for k in lat)
    other = EulerSampler(num_points=4, shift=1.0)(model.denoiser, noise,
                                                  labels)
    assert not torch.allclose(lat['patch'], other['patch'], atol=1e-4)
    # A seeded generator reproduces the noise.
    a = model.sample(labels, generator=torch.Generator().manual_seed(5))
    b = model.sample(labels, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match='labels'):
        model.sample(torch.tensor([NUM_CLASSES]))
    with pytest.raises(ValueError, match='noise'):
        model.sample(labels, noise={'patch': noise['patch']})


def test_guidance_configs():
    model = build(DECQ_TOK, guidance=dict(
        type='ClassifierFreeGuidance', scale=3.0, interval=(0.0, 1.0)))
    randomize(model.denoiser, 4)
    noise = model.make_noise(2, torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1])
    guided = model.sample_latents(labels, noise)
    model.guidance.scale = 1.0
    plain = model.sample_latents(labels, noise)
    assert not torch.allclose(guided['patch'], plain['patch'], atol=1e-4)
    # Autoguidance: the guide config gets the denoiser's latent defaults
    # and is frozen; with the guide equal to the model it is a no-op.
    model = build(DECQ_TOK, guidance=dict(
        type='AutoGuidance', scale=2.0, guide=DIT))
    guide = model.guidance.guide
    assert guide.num_queries == 2 and guide.in_channels == 32
    assert guide.num_classes == NUM_CLASSES
    assert all(not p.requires_grad for p in guide.parameters())
    randomize(model.denoiser, 5)
    guide.load_state_dict(model.denoiser.state_dict())
    out = model.sample_latents(labels, noise)
    model.guidance = None
    # (Two modules with equal weights agree to float rounding, not bitwise.)
    assert all(torch.allclose(out[k], v, atol=1e-5)
               for k, v in model.sample_latents(labels, noise).items())
    model.guidance = MODELS.build(dict(type='AutoGuidance', scale=2.0,
                                       guide=randomize(guide, 6)))
    assert not torch.allclose(model.sample_latents(labels, noise)['patch'],
                              out['patch'], atol=1e-3)


def _stats(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        out[f'{key}_mean'] = torch.randn(shape, generator=g)
        out[f'{key}_var'] = torch.rand(shape, generator=g) + 0.5
    return out


def test_decode_with_rae_decoder_uses_only_patches(tmp_path):
    torch.manual_seed(0)
    rae = MODELS.build(RAE_TOK)
    randomize(rae.decoder, 6)
    rae.normalizer.set_stats(_stats(rae.latent_shapes, 1))  # must not apply
    path = str(tmp_path / 'rae.pth')
    torch.save({'state_dict': {f'tokenizer.{k}': v
                               for k, v in rae.state_dict().items()}}, path)
    model = build(DECQ_TOK, decode_with=dict(tokenizer=RAE_TOK, ckpt=path))
    model.tokenizer.normalizer.set_stats(
        _stats(model.tokenizer.latent_shapes, 2))
    assert model.image_size == IMAGE
    assert all(not p.requires_grad for p in model.rae_decoder.parameters())
    lat = model.make_noise(2, torch.Generator().manual_seed(3))
    out = model.decode(lat)
    # Patches denormalised with the DecQ stats, decoded raw by the RAE.
    stats = model.tokenizer.normalizer
    raw = lat['patch'] * (stats.patch_var + stats.eps).sqrt() + \
        stats.patch_mean
    with torch.no_grad():
        want = rae.decoder(raw, None).clamp(0, 1)
    assert torch.allclose(out, want, atol=1e-5)
    # Queries are dropped: changing them changes nothing.
    lat2 = dict(lat, query=torch.randn_like(lat['query']))
    assert torch.equal(model.decode(lat2), out)
    # The plain DecQ decoder does read the queries.
    assert not torch.allclose(model.tokenizer.decode(lat2),
                              model.tokenizer.decode(lat))
    # Sampling is joint, decoding through the RAE decoder.
    randomize(model.denoiser, 7)
    imgs = model.sample(torch.tensor([0, 1]), noise=lat)
    assert torch.allclose(imgs, model.decode(model.sample_latents(
        torch.tensor([0, 1]), noise=lat)))
    with pytest.raises(ValueError, match='RAE'):
        build(DECQ_TOK, decode_with=dict(tokenizer=DECQ_TOK))


def test_tokenizer_checkpoint_ema_and_stats(tmp_path):
    torch.manual_seed(0)
    ema = randomize(MODELS.build(DECQ_TOK), 8)
    raw = copy.deepcopy(ema)
    randomize(raw.decoder, 9)
    randomize(raw.condenser, 10)
    trainable = [k for k, _ in itertools.chain(
        raw.decoder.named_parameters(prefix='decoder'),
        raw.condenser.named_parameters(prefix='condenser'))]
    path = str(tmp_path / 'stage1.pth')
    # EMAHook layout: state_dict = EMA weights, ema_state_dict = raw ones.
    torch.save({
        'state_dict': {f'tokenizer.{k}': v
                       for k, v in ema.state_dict().items()},
        'ema_state_dict': dict(steps=torch.tensor(5), **{
            f'module.tokenizer.{k}': raw.state_dict()[k] for k in trainable})
    }, path)
    for use_ema, want in ((True, ema), (False, raw)):
        model = build(DECQ_TOK, tokenizer_ckpt=path, use_ema=use_ema)
        got = model.tokenizer.state_dict()
        assert all(torch.equal(got[k], v)
                   for k, v in want.state_dict().items())
        assert all(not p.requires_grad for p in model.tokenizer.parameters())
    # A statistics file in the config wins over the checkpoint's buffers.
    stats = _stats(ema.latent_shapes, 11)
    stats_path = str(tmp_path / 'stats.pt')
    torch.save(stats, stats_path)
    model = build(dict(DECQ_TOK, latent_stats=stats_path),
                  tokenizer_ckpt=path)
    assert bool(model.tokenizer.normalizer.enabled)
    assert torch.equal(model.tokenizer.normalizer.query_mean,
                       stats['query_mean'])
    assert torch.equal(model.tokenizer.decoder.patch_in.weight,
                       ema.decoder.patch_in.weight)


def test_argument_checks():
    with pytest.raises(ValueError, match='in_channels'):
        LatentDiffusionModel(tokenizer=RAE_TOK,
                             denoiser=dict(DIT, in_channels=8))
    with pytest.raises(ValueError, match='num_classes'):
        build(RAE_TOK, num_classes=0)
    model = build(RAE_TOK)
    with pytest.raises(TypeError, match='inputs'):
        model([1, 2], dict(gt_label=torch.tensor([0])), mode='loss')
    with pytest.raises(KeyError, match='gt_label'):
        model(images(1), dict(), mode='loss')
    with pytest.raises(ValueError, match='mode'):
        model(images(1), dict(gt_label=torch.tensor([0])), mode='bad')


def test_compile_true_compiles_denoiser_and_decoder_blocks():
    import torch._dynamo
    from decq_plugin.apis.precision import (inference_precision,
                                            prepare_inference)
    torch._dynamo.reset()
    model = build(compile=dict(backend='eager'))
    assert model.compiled_regions == [
        'denoiser.body_blocks.0', 'denoiser.head_blocks.0',
        'tokenizer.decoder.blocks.0']
    eager = build()
    assert eager.compiled_regions == []
    randomize(eager.denoiser, 3)
    model.load_state_dict(eager.state_dict())
    labels = torch.arange(2) % NUM_CLASSES
    noise = eager.make_noise(2, generator=torch.Generator().manual_seed(0))
    want = eager.sample(labels, noise=noise)
    torch.testing.assert_close(model.sample(labels, noise=noise), want)
    # The sampling API compiles an eager model the same way; fp32 on CPU.
    assert prepare_inference(eager, dict(backend='eager')) == \
        model.compiled_regions
    with inference_precision('fp32', 'cpu'):
        torch.testing.assert_close(eager.sample(labels, noise=noise), want)
