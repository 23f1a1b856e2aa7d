"""Stage-1 AutoencoderModel: train steps through the GAN schedule with an
OptimWrapperDict from SubmoduleOptimWrapperConstructor, predict / loss /
tensor modes. Tiny DecQ tokenizer, random-trunk LPIPS, tiny DINO
discriminator; offline, CPU."""
import copy
import uuid

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper, OptimWrapperDict, build_optim_wrapper

from decq_plugin.models.autoencoder_model import AutoencoderModel
from decq_plugin.models.losses.adversarial import generator_hinge_loss
from decq_plugin.registry import MODELS

DIM = 32
TOKENIZER = dict(
    type='DecQTokenizer',
    encoder=dict(type='TimmViTEncoder',
                 model_name='vit_base_patch14_reg4_dinov2', input_size=56,
                 pretrained=False,
                 model_kwargs=dict(embed_dim=DIM, depth=4, num_heads=2)),
    decoder=dict(type='ViTPixelDecoder', patch_size=8,
                 arch=dict(width=32, depth=2, num_heads=2, mlp_dim=64)),
    condenser=dict(num_queries=2, layers=(0, 2), num_heads=2),
    noise_tau=0.8)
DISCRIMINATOR = dict(
    type='DINODiscriminator', model_name='vit_small_patch8_224.dino',
    pretrained=False, block_indices=(0, 1), head_channels=16, kernel_size=3,
    input_size=32,
    model_kwargs=dict(img_size=32, embed_dim=32, depth=2, num_heads=2))
MODEL = dict(type='AutoencoderModel', tokenizer=TOKENIZER,
             perceptual_loss=dict(type='LPIPSLoss', pretrained_trunk=False),
             discriminator=DISCRIMINATOR,
             diffaug=dict(type='DiffAug', policy='color,translation'),
             disc_start=1, gan_start=2, schedule_unit='epoch')
_ADAMW = dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
OPTIM = dict(constructor='SubmoduleOptimWrapperConstructor',
             tokenizer=dict(type='OptimWrapper', optimizer=_ADAMW),
             discriminator=dict(type='OptimWrapper', optimizer=_ADAMW))


@pytest.fixture(scope='module')
def prototype() -> AutoencoderModel:
    torch.manual_seed(0)
    return MODELS.build(MODEL)


@pytest.fixture
def model(prototype) -> AutoencoderModel:
    return copy.deepcopy(prototype).train()


@pytest.fixture
def hub():
    """A fresh current MessageHub for one test, removed afterwards."""
    name = f'test-autoencoder-{uuid.uuid4().hex}'
    instance = MessageHub.get_instance(name)
    try:
        yield instance
    finally:
        MessageHub._instance_dict.pop(name, None)


def _data(n: int = 2, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return dict(inputs=torch.rand(n, 3, 32, 32, generator=gen),
                data_samples=dict(gt_label=torch.arange(n),
                                  img_path=[f'img{i}.png' for i in range(n)]))


def _params(module: torch.nn.Module) -> dict:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _state(module: torch.nn.Module) -> dict:
    return {n: t.detach().clone() for n, t in module.state_dict().items()}


def _changed(before: dict, module: torch.nn.Module, params: bool = True):
    now = dict(module.named_parameters()) if params else module.state_dict()
    return {n for n, t in before.items() if not torch.equal(t, now[n])}


def _optim(model) -> OptimWrapperDict:
    """Needs the ``decq_scope`` fixture (the constructor is registered in
    the plugin's scope)."""
    return build_optim_wrapper(model, copy.deepcopy(OPTIM))


def _frozen_snapshot(model) -> dict:
    return dict(vfm=_state(model.tokenizer.encoder),
                feature_net=_state(model.discriminator.feature_net),
                lpips=_state(model.perceptual_loss))


def _assert_frozen_unchanged(model, snapshot):
    assert not _changed(snapshot['vfm'], model.tokenizer.encoder, False)
    assert not _changed(snapshot['feature_net'],
                        model.discriminator.feature_net, False)
    assert not _changed(snapshot['lpips'], model.perceptual_loss, False)


def test_optim_wrapper_dict_from_constructor(model, decq_scope):
    optim = _optim(model)
    assert isinstance(optim, OptimWrapperDict)
    assert set(optim.keys()) == {'tokenizer', 'discriminator'}
    for key in ('tokenizer', 'discriminator'):
        owned = {id(p) for p in getattr(model, key).parameters()}
        listed = {id(p) for g in optim[key].optimizer.param_groups
                  for p in g['params']}
        assert listed == owned, key
    bad = dict(OPTIM, generator=dict(type='OptimWrapper', optimizer=_ADAMW))
    with pytest.raises(KeyError, match='generator'):
        build_optim_wrapper(model, bad)


def test_step_before_disc_start(model, hub, decq_scope):
    hub.update_info('epoch', 0)
    optim = _optim(model)
    tok_before = _params(model.tokenizer)
    heads_before = _params(model.discriminator.heads)
    frozen = _frozen_snapshot(model)
    log = model.train_step(_data(), optim)
    assert {'loss', 'loss_l1', 'loss_perceptual'} <= set(log)
    assert not {'loss_gan', 'gan_adaptive_weight', 'loss_disc'} & set(log)
    assert torch.allclose(log['loss'],
                          log['loss_l1'] + log['loss_perceptual'])
    trainable = {n for n, p in model.tokenizer.named_parameters()
                 if p.requires_grad}
    assert trainable and _changed(tok_before, model.tokenizer) == trainable
    assert not _changed(heads_before, model.discriminator.heads)
    _assert_frozen_unchanged(model, frozen)


def test_step_between_disc_start_and_gan_start(model, hub, decq_scope):
    hub.update_info('epoch', 1)
    optim = _optim(model)
    heads_before = _params(model.discriminator.heads)
    frozen = _frozen_snapshot(model)
    log = model.train_step(_data(), optim)
    assert 'loss_disc' in log and 'loss_gan' not in log
    assert torch.allclose(log['loss'],
                          log['loss_l1'] + log['loss_perceptual'])
    assert 'disc_logits_real' in log and 'disc_logits_fake' in log
    assert _changed(heads_before, model.discriminator.heads) == set(
        heads_before)
    _assert_frozen_unchanged(model, frozen)


def test_step_after_gan_start(model, hub, decq_scope):
    hub.update_info('epoch', 3)
    optim = _optim(model)
    data = _data()
    images = data['inputs']
    # The adaptive weight by hand, with the same random draws (noise
    # augmentation, then DiffAug) as the step below.
    torch.manual_seed(11)
    recon = model.tokenizer(images)['recon']
    rec = (recon - images).abs().mean() + model.perceptual_loss(recon, images)
    g_loss = generator_hinge_loss(model.discriminator(model.diffaug(recon)))
    last = model.tokenizer.decoder.head.weight
    g_rec, = torch.autograd.grad(rec, last, retain_graph=True)
    g_gan, = torch.autograd.grad(g_loss, last)
    weight = g_rec.norm() / (g_gan.norm() + 1e-6)
    assert 0 < weight < 1e4

    tok_before = _params(model.tokenizer)
    heads_before = _params(model.discriminator.heads)
    frozen = _frozen_snapshot(model)
    torch.manual_seed(11)
    log = model.train_step(data, optim)
    assert {'loss_gan', 'gan_adaptive_weight', 'loss_disc'} <= set(log)
    assert torch.isfinite(log['gan_adaptive_weight'])
    assert log['gan_adaptive_weight'].item() == pytest.approx(
        weight.item(), rel=1e-4)
    assert log['loss_gan'].item() == pytest.approx(
        0.75 * weight.item() * g_loss.item(), rel=1e-4, abs=1e-7)
    # 'loss' stays the tokenizer's total; the discriminator's is apart.
    assert torch.allclose(
        log['loss'], log['loss_l1'] + log['loss_perceptual'] +
        log['loss_gan'], atol=1e-6)
    assert _changed(tok_before, model.tokenizer)
    assert _changed(heads_before, model.discriminator.heads) == set(
        heads_before)
    _assert_frozen_unchanged(model, frozen)
    # More steps: the frozen networks still never move.
    for seed in (1, 2):
        model.train_step(_data(seed=seed), optim)
    _assert_frozen_unchanged(model, frozen)


def test_single_optim_wrapper_means_no_gan(model, hub, decq_scope):
    hub.update_info('epoch', 5)
    optim = build_optim_wrapper(model.tokenizer,
                                dict(type='OptimWrapper', optimizer=_ADAMW))
    assert isinstance(optim, OptimWrapper)
    heads_before = _params(model.discriminator.heads)
    log = model.train_step(_data(), optim)
    assert not {'loss_gan', 'loss_disc'} & set(log)
    assert not _changed(heads_before, model.discriminator.heads)


def test_gan_phase_follows_the_message_hub(model, hub):
    for epoch, phase in ((0, (False, False)), (1, (True, False)),
                         (2, (True, True))):
        hub.update_info('epoch', epoch)
        assert tuple(model.gan_phase().values()) == phase
    model.schedule_unit = 'iter'
    hub.update_info('iter', 0)
    assert model.gan_phase() == dict(disc=False, gan=False)
    hub.update_info('iter', 2)
    assert model.gan_phase() == dict(disc=True, gan=True)


def test_predict_mode(model):
    model.eval()
    data = _data(3)
    with torch.no_grad():
        out = model.val_step(data)
    assert isinstance(out, list) and len(out) == 3
    for i, item in enumerate(out):
        assert item['pred'].shape == (3, 32, 32)
        assert item['pred'].device.type == 'cpu'
        assert item['pred'].min() >= 0 and item['pred'].max() <= 1
        assert torch.equal(item['gt'], data['inputs'][i])
        assert item['gt_label'] == i and isinstance(item['gt_label'], int)
        assert item['img_path'] == f'img{i}.png'
    with torch.no_grad():
        recon = model.tokenizer.reconstruct(data['inputs'])
    assert torch.equal(torch.stack([o['pred'] for o in out]), recon)


def test_loss_and_tensor_modes(model, hub):
    hub.update_info('epoch', 5)  # 'loss' mode never adds the GAN term
    model.tokenizer.noise_tau = 0.0
    images = _data()['inputs']
    losses = model(images, mode='loss')
    assert set(losses) == {'loss_l1', 'loss_perceptual'}
    recon = model.tokenizer(images, augment=False)['recon']
    assert torch.allclose(losses['loss_l1'], (recon - images).abs().mean())
    assert torch.allclose(losses['loss_perceptual'],
                          model.perceptual_loss(recon, images))
    out = model(images, mode='tensor')
    assert torch.equal(out, model.tokenizer.reconstruct(images))
    with pytest.raises(ValueError, match='mode'):
        model(images, mode='sample')


def test_init_weights_keeps_pretrained_networks(model):
    frozen = _frozen_snapshot(model)
    model.init_weights()
    _assert_frozen_unchanged(model, frozen)


def test_argument_checks():
    with pytest.raises(ValueError, match='gan_start'):
        AutoencoderModel(tokenizer=TOKENIZER, perceptual_loss=None,
                         discriminator=None, disc_start=5, gan_start=2)
    with pytest.raises(ValueError, match='schedule_unit'):
        AutoencoderModel(tokenizer=TOKENIZER, perceptual_loss=None,
                         discriminator=None, schedule_unit='step')


def _tokenizer_grads(model) -> dict:
    return {n: p.grad.clone() for n, p in model.tokenizer.named_parameters()
            if p.requires_grad}


@pytest.mark.parametrize('loss_scale', [1.0, 1024.0])
def test_gan_step_has_the_gradient_of_the_full_loss(prototype, loss_scale):
    """generator_gan_step (one backward through LPIPS and the discriminator
    trunk) gives the losses and tokenizer gradients of the direct route:
    the adaptive weight on the full graphs, then the total's backward."""
    images = _data(n=3, seed=4)['inputs']
    direct, fast = (copy.deepcopy(prototype).train() for _ in range(2))
    torch.manual_seed(5)
    losses, _ = direct.generator_losses(images, use_gan=True)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    torch.manual_seed(5)
    fast_losses, recon, backward_loss = fast.generator_gan_step(
        images, loss_scale)
    assert not recon.requires_grad
    backward_loss.backward()
    assert set(fast_losses) == set(losses)
    for key, value in losses.items():
        torch.testing.assert_close(fast_losses[key], value.detach(),
                                   rtol=1e-5, atol=1e-7, msg=key)
    assert losses['gan_adaptive_weight'] > 0
    want, got = _tokenizer_grads(direct), _tokenizer_grads(fast)
    assert want.keys() == got.keys()
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-7,
                                   msg=name)
    # The discriminator gets no gradient from the generator's step.
    assert all(p.grad is None for p in fast.discriminator.parameters())


def test_compile_true_compiles_decoder_discriminator_and_lpips(decq_scope):
    cfg = copy.deepcopy(MODEL)
    cfg['compile'] = dict(backend='eager')
    model = MODELS.build(cfg)
    heads = len(model.discriminator.heads)
    assert model.compiled_regions == [
        'tokenizer.decoder.blocks.0', 'tokenizer.decoder.blocks.1',
        'discriminator.feature_net.blocks.0',
        'discriminator.feature_net.blocks.1'] + [
        f'discriminator.heads.{i}' for i in range(heads)] + [
        'perceptual_loss.lpips']
    assert MODELS.build(MODEL).compiled_regions == []


def test_compiled_step_matches_eager_step(decq_scope):
    """One GAN-phase train step through AOT autograd (the graphs
    inductor would compile, functionalised; spectral norm's in-place power
    iteration included) gives the eager step's losses, weights and
    spectral-norm vectors."""
    from mmengine.optim import OptimWrapper, OptimWrapperDict
    results = []
    for spec in (False, dict(backend='aot_eager')):
        torch.manual_seed(0)
        cfg = copy.deepcopy(MODEL)
        cfg.update(compile=spec, disc_start=0, gan_start=0)
        model = MODELS.build(cfg)
        wrappers = OptimWrapperDict(
            tokenizer=OptimWrapper(torch.optim.SGD(
                model.tokenizer.parameters(), lr=0.1)),
            discriminator=OptimWrapper(torch.optim.SGD(
                model.discriminator.parameters(), lr=0.1)))
        torch.manual_seed(1)
        images = torch.rand(2, 3, 32, 32)
        log = model.train_step(dict(inputs=images), wrappers)
        buffers = {k: v.clone() for k, v in model.named_buffers()
                   if k.endswith('_u') or k.endswith('_v')}
        params = {k: v.detach().clone() for k, v in model.named_parameters()}
        results.append((log, buffers, params))
    (log0, buf0, par0), (log1, buf1, par1) = results
    assert buf0 and buf0.keys() == buf1.keys()
    for key in log0:
        torch.testing.assert_close(log1[key], log0[key], rtol=1e-4,
                                   atol=1e-6, msg=key)
    for key in buf0:
        torch.testing.assert_close(buf1[key], buf0[key], msg=key)
    for key in par0:
        torch.testing.assert_close(par1[key], par0[key], rtol=1e-4,
                                   atol=1e-6, msg=key)


def _gan_step_on(images: torch.Tensor, batch: str) -> tuple:
    """The adaptive weight and the tokenizer gradients (averaged over the
    processes when distributed) of one GAN step on ``images``."""
    torch.manual_seed(0)
    cfg = copy.deepcopy(MODEL)
    cfg['tokenizer'] = dict(cfg['tokenizer'], noise_tau=0.0)
    cfg.update(diffaug=None, adaptive_weight_batch=batch)
    model = MODELS.build(cfg).train()
    losses, _, backward_loss = model.generator_gan_step(images)
    backward_loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.tokenizer.parameters()
                       if p.grad is not None])
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(grads)
        grads /= torch.distributed.get_world_size()
    return float(losses['gan_adaptive_weight']), grads


def _rank_gan_step(rank: int, port: int, batch: str, out: str) -> None:
    """One of two gloo processes: its half of the batch (rank r takes
    samples r, r + 2, ..., as the sampler shards them)."""
    import os
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.distributed.init_process_group('gloo', rank=rank, world_size=2)
    try:
        weight, grads = _gan_step_on(_data(n=4, seed=3)['inputs'][rank::2],
                                     batch)
        if rank == 0:
            torch.save(dict(weight=weight, grads=grads), out)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize('batch', ['global', 'local'])
def test_two_processes_equal_one_only_with_the_global_weight(tmp_path,
                                                              batch):
    """adaptive_weight_batch='global' in train_step's GAN route: two
    processes with half the batch each take the weight (and, after the
    gradient average DDP does, the tokenizer gradients) of one process on
    the whole batch; 'local' does not."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out = str(tmp_path / 'rank0.pt')
    # spawn, not fork: a fork after this process's OpenMP pool started
    # (earlier tests in the same worker) can deadlock the children
    mp.start_processes(_rank_gan_step, args=(port, batch, out), nprocs=2,
                       start_method='spawn')
    two = torch.load(out, weights_only=True)
    weight, grads = _gan_step_on(_data(n=4, seed=3)['inputs'], 'local')
    rel = float((two['grads'] - grads).norm() / grads.norm())
    if batch == 'global':
        assert two['weight'] == pytest.approx(weight, rel=1e-4)
        assert rel < 1e-4
    else:
        assert abs(two['weight'] - weight) > 1e-3 * weight
        assert rel > 1e-3
