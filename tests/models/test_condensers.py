"""Condensers on a tiny 12-block DINOv2-with-registers layout (offline, CPU).

The central invariant: information flows only from the VFM to the queries,
so patch latents are bit-identical with and without condensers and no
gradient reaches the VFM. The condensed queries are checked against a pass
written out by hand (blocks run one by one, condenser blocks applied in
depth order).
"""
from typing import List, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from decq_plugin.models.condensers import CondenserBlock, QueryCondenser
from decq_plugin.models.encoders.timm_encoder import TimmViTEncoder
from decq_plugin.registry import MODELS

DIM = 32
PREFIX = 5  # CLS + 4 registers
# init_values=1: DINOv2's 1e-5 layer scales would make the random blocks
# near-identities, so tapping the wrong block would go unnoticed.
TINY_VFM = dict(embed_dim=DIM, depth=12, num_heads=2, init_values=1.0)
ENCODER = dict(type='TimmViTEncoder',
               model_name='vit_base_patch14_reg4_dinov2',
               input_size=56, pretrained=False, model_kwargs=TINY_VFM)
DECODER = dict(type='ViTPixelDecoder', patch_size=8,
               arch=dict(width=32, depth=2, num_heads=2, mlp_dim=64))


def _images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32,
                      generator=torch.Generator().manual_seed(seed))


def _encoder(seed: int = 0, **kwargs) -> TimmViTEncoder:
    torch.manual_seed(seed)
    return MODELS.build(dict(ENCODER, **kwargs))


def _condenser(seed: int = 1, **kwargs) -> QueryCondenser:
    torch.manual_seed(seed)
    cfg = dict(num_queries=3, embed_dim=DIM, layers=(0, 3, 6, 9),
               num_heads=2)
    cfg.update(kwargs)
    cond = QueryCondenser(**cfg)
    # Queries at std 0.02 are almost equal; spread them so that mistakes in
    # how they are carried through show.
    with torch.no_grad():
        cond.queries.normal_()
    return cond


def _condense(cond: QueryCondenser, enc: TimmViTEncoder,
              images: torch.Tensor):
    with cond.condense(enc, images.shape[0]):
        patches = enc(images)
        queries = cond.result()
    return patches, queries


def _reference(cond: QueryCondenser, enc: TimmViTEncoder,
               images: torch.Tensor, layers: Sequence[int], tap: str,
               kv_tokens: str) -> torch.Tensor:
    """The condensed queries, by hand: run the VFM block by block and apply
    condenser block j at the j-th tapped layer (depth order)."""
    with torch.no_grad():
        x = enc._embed(enc.preprocess(images))
        q = cond.queries.unsqueeze(0).expand(images.shape[0], -1, -1)
        j = 0
        for i, block in enumerate(enc.blocks):
            if tap == 'output':
                x = block(x)
            if i in layers:
                kv = x[:, PREFIX:] if kv_tokens == 'patch' else x
                q = cond.blocks[j](q, kv)
                j += 1
            if tap == 'input':
                x = block(x)
        assert j == len(layers)
        return F.layer_norm(q, (DIM, ), eps=1e-6)


def _hooks_left(enc: TimmViTEncoder) -> List[str]:
    return [f'block {i}' for i, b in enumerate(enc.blocks)
            if b._forward_hooks or b._forward_pre_hooks]


# -- the invariant ------------------------------------------------------------
@pytest.mark.parametrize('tap,kv_tokens', [('output', 'patch'),
                                           ('input', 'all')])
def test_patch_tokens_bit_identical_with_and_without(tap, kv_tokens):
    enc = _encoder()
    cond = _condenser(tap=tap, kv_tokens=kv_tokens)
    images = _images()
    before = enc(images)
    patches, queries = _condense(cond, enc, images)
    after = enc(images)
    assert queries.shape == (2, 3, DIM)
    assert torch.equal(before, patches)
    assert torch.equal(before, after)


def test_decq_and_rae_patch_latents_bit_identical():
    torch.manual_seed(0)
    rae = MODELS.build(dict(type='RAETokenizer', encoder=ENCODER,
                            decoder=DECODER))
    torch.manual_seed(7)
    decq = MODELS.build(dict(type='DecQTokenizer', encoder=ENCODER,
                             decoder=DECODER,
                             condenser=dict(num_queries=3, num_heads=2)))
    decq.encoder.load_state_dict(rae.encoder.state_dict())
    images = _images(3)
    a = rae.encode(images)
    b = decq.encode(images)
    assert set(a) == {'patch'} and set(b) == {'patch', 'query'}
    assert torch.equal(a['patch'], b['patch'])
    # The condensers actually ran (queries are not their initial values).
    init = F.layer_norm(decq.condenser.queries, (DIM, ), eps=1e-6)
    assert not torch.allclose(b['query'][0], init, atol=1e-3)


def test_no_gradient_reaches_the_vfm():
    torch.manual_seed(0)
    tok = MODELS.build(dict(type='DecQTokenizer', encoder=ENCODER,
                            decoder=DECODER,
                            condenser=dict(num_queries=3, num_heads=2)))
    tok.train()
    images = _images()
    latents = tok.encode(images)
    out = tok(images)
    loss = latents['query'].square().mean() + out['recon'].abs().mean()
    loss.backward()
    assert all(p.grad is None for p in tok.encoder.parameters())
    assert tok.condenser.queries.grad.abs().sum() > 0
    for name, p in tok.condenser.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert tok.decoder.query_in.weight.grad.abs().sum() > 0


def test_condensers_detach_even_a_trainable_vfm():
    """Queries read detached tokens: with an unfrozen VFM a loss on the
    queries alone still sends no gradient into it."""
    enc = _encoder(frozen=False)
    cond = _condenser()
    patches, queries = _condense(cond, enc, _images())
    queries.sum().backward()
    assert all(p.grad is None for p in enc.parameters())
    assert cond.queries.grad is not None
    patches.sum().backward()  # the VFM itself is trainable here
    assert enc.vit.patch_embed.proj.weight.grad is not None


# -- hooks --------------------------------------------------------------------
def test_hooks_removed_after_condense():
    enc = _encoder()
    cond = _condenser()
    with cond.condense(enc, 2):
        assert len(_hooks_left(enc)) == 4 and cond.attached
        enc(_images())
    assert _hooks_left(enc) == [] and not cond.attached
    with pytest.raises(RuntimeError, match='inside condense'):
        cond.result()
    # Also when the pass fails half way.
    with pytest.raises(ValueError):
        with cond.condense(enc, 2):
            enc(torch.rand(2, 1, 32, 32))
    assert _hooks_left(enc) == []


def test_tokenizer_leaves_no_hooks():
    torch.manual_seed(0)
    tok = MODELS.build(dict(type='DecQTokenizer', encoder=ENCODER,
                            decoder=DECODER,
                            condenser=dict(num_queries=3, num_heads=2)))
    assert _hooks_left(tok.encoder) == []
    tok.encode(_images())
    tok(_images())
    assert _hooks_left(tok.encoder) == []


def test_vfm_alone_ignores_attached_condenser():
    """Attached but outside condense(): the hooks do nothing."""
    enc = _encoder()
    cond = _condenser()
    cond.attach(enc)
    try:
        with pytest.raises(RuntimeError, match='already attached'):
            cond.attach(enc)
        enc(_images())
        with pytest.raises(RuntimeError):
            cond.result()
    finally:
        cond.detach()
    assert _hooks_left(enc) == []


# -- what the queries see, and in which order ---------------------------------
@pytest.mark.parametrize('layers,tap,kv_tokens', [
    ((0, 3, 6, 9), 'output', 'patch'),
    ((0, 3, 6, 9), 'input', 'patch'),
    ((2, 11), 'output', 'all'),
    ((9, 0, 6, 3), 'output', 'patch'),  # given unsorted
])
def test_queries_match_hand_written_pass(layers, tap, kv_tokens):
    enc = _encoder()
    cond = _condenser(layers=layers, tap=tap, kv_tokens=kv_tokens)
    images = _images()
    _, queries = _condense(cond, enc, images)
    ref = _reference(cond, enc, images, sorted(layers), tap, kv_tokens)
    assert torch.allclose(queries, ref, atol=1e-5)
    # The order matters: the condenser blocks applied deepest first differ.
    with torch.no_grad():
        cond.blocks = nn.ModuleList(reversed(list(cond.blocks)))
    assert not torch.allclose(
        _reference(cond, enc, images, sorted(layers), tap, kv_tokens), ref,
        atol=1e-3)


def test_condenser_blocks_run_in_depth_order():
    enc = _encoder()
    cond = _condenser()
    calls = []
    vfm_depth = {'n': 0}

    def count_vfm(module, args, output):
        vfm_depth['n'] += 1

    def record(j):
        return lambda module, args: calls.append((j, vfm_depth['n']))

    handles = [b.register_forward_hook(count_vfm) for b in enc.blocks]
    handles += [b.register_forward_pre_hook(record(j))
                for j, b in enumerate(cond.blocks)]
    try:
        _condense(cond, enc, _images())
    finally:
        for h in handles:
            h.remove()
    # Condenser j runs once, after VFM block layers[j] (VFM blocks counted
    # when they finish; the counting hook was registered first).
    assert calls == [(0, 1), (1, 4), (2, 7), (3, 10)]


def test_tap_input_at_layer_zero_sees_patch_embedding():
    enc = _encoder()
    images = _images()
    seen = {}

    def spy(module, args):
        seen['tokens'] = args[1]

    vit = enc.vit
    x = enc.preprocess(images)
    with torch.no_grad():
        embedding = vit.patch_embed.proj(x).flatten(2).transpose(1, 2) \
            + vit.pos_embed
    for tap in ('input', 'output'):
        cond = _condenser(layers=(0, ), tap=tap)
        handle = cond.blocks[0].register_forward_pre_hook(spy)
        _condense(cond, enc, images)
        handle.remove()
        assert seen['tokens'].shape == (2, 16, DIM)
        same = torch.allclose(seen['tokens'], embedding, atol=1e-5)
        assert same == (tap == 'input'), tap


def test_kv_tokens_all_includes_prefix():
    enc = _encoder()
    images = _images()
    results, counts = {}, {}
    for kv in ('patch', 'all'):
        cond = _condenser(kv_tokens=kv)  # same seed: same weights
        handle = cond.blocks[1].register_forward_pre_hook(
            lambda m, args, kv=kv: counts.__setitem__(kv, args[1].shape[1]))
        results[kv] = _condense(cond, enc, images)[1]
        handle.remove()
    assert counts == {'patch': 16, 'all': 16 + PREFIX}
    assert not torch.allclose(results['patch'], results['all'], atol=1e-4)


def test_queries_are_per_image():
    enc = _encoder()
    cond = _condenser()
    images = _images(3)
    _, batch = _condense(cond, enc, images)
    _, single = _condense(cond, enc, images[1:2])
    assert torch.allclose(batch[1:2], single, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1], atol=1e-3)


def test_final_norm_switch():
    enc = _encoder()
    images = _images()
    normed = _condense(_condenser(final_norm=True), enc, images)[1]
    raw = _condense(_condenser(final_norm=False), enc, images)[1]
    assert torch.allclose(normed, F.layer_norm(raw, (DIM, ), eps=1e-6),
                          atol=1e-5)
    assert not torch.allclose(raw, normed, atol=1e-2)


def test_query_init_and_parameter_count():
    torch.manual_seed(0)
    cond = QueryCondenser(num_queries=64, embed_dim=96, layers=(0, 3),
                          num_heads=4, mlp_ratio=4.0)
    assert cond.queries.shape == (64, 96)
    assert abs(cond.queries.std().item() - 0.02) < 0.002
    assert cond.queries.abs().max() < 0.2
    d = 96
    # Per block: 3 LNs (2d each), q (d^2+d), kv (2d^2+2d), proj (d^2+d),
    # MLP d->4d->d (8d^2+5d).
    per_block = 3 * 2 * d + 4 * d * d + 4 * d + 8 * d * d + 5 * d
    assert sum(p.numel() for p in cond.parameters()) == 2 * per_block + 64 * d
    assert isinstance(cond.blocks[0], CondenserBlock)


# -- argument checks ----------------------------------------------------------
@pytest.mark.parametrize('layers', [(0, 12), (0, 0), (-13, )])
def test_invalid_layers_raise(layers):
    enc = _encoder()
    cond = _condenser(layers=layers)
    with pytest.raises(ValueError, match='layers'):
        with cond.condense(enc, 2):
            enc(_images())
    assert _hooks_left(enc) == []


def test_invalid_layers_raise_when_the_tokenizer_is_built():
    with pytest.raises(ValueError, match='layers'):
        MODELS.build(dict(type='DecQTokenizer', encoder=ENCODER,
                          decoder=DECODER,
                          condenser=dict(num_queries=3, num_heads=2,
                                         layers=(0, 3, 12))))


def test_negative_layer_counts_from_the_end():
    enc = _encoder()
    images = _images()
    last = _condense(_condenser(layers=(-1, )), enc, images)[1]
    eleven = _condense(_condenser(layers=(11, )), enc, images)[1]
    assert torch.equal(last, eleven)


@pytest.mark.parametrize('kwargs,name', [
    (dict(layers=()), 'layers'),
    (dict(tap='middle'), 'tap'),
    (dict(kv_tokens='cls'), 'kv_tokens'),
    (dict(num_queries=0), 'num_queries'),
])
def test_constructor_checks(kwargs, name):
    with pytest.raises(ValueError, match=name):
        QueryCondenser(**dict(dict(embed_dim=DIM, num_heads=2), **kwargs))


def test_embed_dim_mismatch_raises():
    enc = _encoder()
    cond = QueryCondenser(num_queries=2, embed_dim=48, num_heads=2)
    with pytest.raises(ValueError, match='embed_dim'):
        with cond.condense(enc, 2):
            pass
    assert _hooks_left(enc) == []
    with pytest.raises(ValueError, match='embed_dim'):
        MODELS.build(dict(type='DecQTokenizer', encoder=ENCODER,
                          decoder=DECODER,
                          condenser=dict(num_queries=3, num_heads=2,
                                         embed_dim=48)))


def test_condensers_build_no_graph_when_the_caller_does_not():
    """Inference (stats, latent extraction, evaluation) must not record an
    autograd graph inside the VFM's no_grad blocks; training must."""
    import torch
    from mmengine.registry import init_default_scope

    from decq_plugin.registry import MODELS
    init_default_scope('decq_plugin')
    tok = MODELS.build(
        dict(type='DecQTokenizer',
             encoder=dict(type='TimmViTEncoder', pretrained=False,
                          input_size=28,
                          model_kwargs=dict(embed_dim=32, depth=4,
                                            num_heads=2)),
             decoder=dict(type='ViTPixelDecoder', patch_size=16,
                          arch=dict(width=32, depth=1, num_heads=2,
                                    mlp_dim=64)),
             condenser=dict(num_queries=2, layers=(1, 3), num_heads=2)))
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        query = tok.encode_raw(images)['query']
    assert query.grad_fn is None and not query.requires_grad
    query = tok.encode_raw(images)['query']
    assert query.grad_fn is not None
