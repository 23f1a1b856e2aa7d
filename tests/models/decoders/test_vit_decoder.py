"""ViT pixel decoder: shapes, presets (counted on the meta device), joint
patch/query attention, unpatchify layout and argument checks."""
import pytest
import torch
from einops import rearrange

from decq_plugin.models.decoders.vit_decoder import (DECODER_PRESETS,
                                                     ViTPixelDecoder)
from decq_plugin.models.pos_embed import sincos_2d
from decq_plugin.registry import MODELS

TINY = dict(width=32, depth=2, num_heads=2, mlp_dim=64)


def _decoder(seed: int = 0, **kwargs) -> ViTPixelDecoder:
    torch.manual_seed(seed)
    cfg = dict(type='ViTPixelDecoder', arch=TINY, in_channels=24,
               grid_size=4, patch_size=8)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _latents(b: int = 2, c: int = 24, g: int = 4, q: int = 0, cq: int = 24,
             seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    patch = torch.randn(b, c, g, g, generator=gen)
    query = torch.randn(b, q, cq, generator=gen) if q else None
    return patch, query


def _expected_params(width: int, depth: int, mlp: int, in_channels: int = 768,
                     patch: int = 16, num_queries: int = 0,
                     query_channels: int = 768) -> int:
    """Parameters of the decoder, counted by hand.

    Block: attention q (w^2+w), kv (2w^2+2w), proj (w^2+w); MLP
    (w*mlp+mlp + mlp*w+w); two LayerNorms (4w). Plus the patch in-projection,
    the final LN, the pixel head and RAE's learned CLS token (w); the sin-cos
    position embedding is a buffer. DecQ adds a query in-projection and
    learnable query positions.
    """
    block = 4 * width * width + 4 * width + 2 * width * mlp + mlp + width \
        + 4 * width
    out = patch * patch * 3
    total = depth * block + (in_channels * width + width) + 2 * width \
        + (width * out + out) + width
    if num_queries:
        total += query_channels * width + width + num_queries * width
    return total


@pytest.mark.parametrize('arch,millions', [('B', 86.24), ('L', 303.89),
                                           ('XL', 415.06)])
def test_preset_parameter_counts_on_meta(arch, millions):
    with torch.device('meta'):
        dec = ViTPixelDecoder(arch=arch, in_channels=768, grid_size=16,
                              patch_size=16)
        dec_q = ViTPixelDecoder(arch=arch, in_channels=768, grid_size=16,
                                patch_size=16, num_queries=8)
    p = DECODER_PRESETS[arch]
    count = sum(t.numel() for t in dec.parameters())
    assert count == _expected_params(p['width'], p['depth'], p['mlp_dim'])
    assert round(count / 1e6, 2) == millions
    assert abs(count - millions * 1e6) / (millions * 1e6) < 0.005
    count_q = sum(t.numel() for t in dec_q.parameters())
    assert count_q == _expected_params(p['width'], p['depth'], p['mlp_dim'],
                                       num_queries=8)
    assert count_q - count == 768 * p['width'] + p['width'] + 8 * p['width']
    assert len(dec.blocks) == p['depth']
    assert dec.blocks[0].attn.num_heads == p['num_heads']


def test_preset_table():
    assert DECODER_PRESETS == {
        'B': dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
        'L': dict(width=1024, depth=24, num_heads=16, mlp_dim=4096),
        'XL': dict(width=1152, depth=28, num_heads=16, mlp_dim=4096),
    }


def test_patch_only_output_shape():
    dec = _decoder()
    patch, _ = _latents()
    out = dec(patch)
    assert out.shape == (2, 3, 32, 32)  # grid 4 * patch 8
    assert torch.isfinite(out).all()
    assert not hasattr(dec, 'query_in')


def test_joint_output_shape_and_query_influence():
    dec = _decoder(num_queries=3, query_channels=16)
    patch, query = _latents(q=3, cq=16)
    out = dec(patch, query)
    assert out.shape == (2, 3, 32, 32)
    _, other = _latents(q=3, cq=16, seed=1)
    assert not torch.allclose(out, dec(patch, other), atol=1e-4)
    # Per image: image 0's query does not change image 1's output.
    mixed = torch.cat([other[:1], query[1:]])
    out_mixed = dec(patch, mixed)
    assert torch.allclose(out_mixed[1], out[1], atol=1e-5)
    assert not torch.allclose(out_mixed[0], out[0], atol=1e-4)


def test_only_patch_positions_predict_pixels():
    dec = _decoder(num_queries=3)
    patch, query = _latents(q=3)
    seen = {}
    handle = dec.head.register_forward_hook(
        lambda m, args, out: seen.update(inp=args[0], out=out))
    image = dec(patch, query)
    handle.remove()
    assert seen['inp'].shape == (2, 16, 32)  # 16 patch tokens, no queries
    # Unpatchify: head output [B, h*w, (p p c)] -> image [B, c, h*p, w*p].
    expected = rearrange(seen['out'], 'b (h w) (p q c) -> b c (h p) (w q)',
                         h=4, w=4, p=8, q=8, c=3)
    # RAE's output parametrisation: ImageNet-normalised pixels mapped back.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(image, expected * std + mean)


def test_cls_token_runs_through_the_blocks_as_rae():
    dec = _decoder(num_queries=3)
    assert dec.cls_token.shape == (1, 1, 32)
    assert 'cls_token' in dec.state_dict()
    assert torch.equal(dec.cls_token, torch.zeros(1, 1, 32))  # as RAE
    assert dec.norm.eps == 1e-12 and dec.blocks[0].norm1.eps == 1e-12
    seen = {}
    handle = dec.blocks[0].register_forward_hook(
        lambda m, args, out: seen.update(inp=args[0]))
    patch, query = _latents(q=3)
    with torch.no_grad():
        dec.cls_token.normal_()
        out = dec(patch, query)
    handle.remove()
    # [CLS ; 16 patches ; 3 queries]; the CLS token carries no position code.
    assert seen['inp'].shape == (2, 1 + 16 + 3, 32)
    torch.testing.assert_close(seen['inp'][:, 0], dec.cls_token[0].expand(
        2, -1))
    # It is attended to: changing it changes the pixels.
    with torch.no_grad():
        dec.cls_token.normal_()
    assert not torch.allclose(dec(patch, query), out, atol=1e-4)


def test_zero_head_predicts_the_mean_image():
    dec = _decoder()
    with torch.no_grad():
        dec.head.weight.zero_()
        dec.head.bias.zero_()
    out = dec(_latents()[0])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, mean.expand_as(out))


def test_earlier_form_behind_options():
    dec = _decoder(cls_token=False, out_mean=None, out_std=None)
    assert dec.cls_token is None and 'cls_token' not in dec.state_dict()
    with torch.no_grad():
        dec.head.weight.zero_()
        dec.head.bias.fill_(0.25)
    assert torch.equal(dec(_latents()[0]), torch.full((2, 3, 32, 32), 0.25))
    with pytest.raises(ValueError, match='out_mean'):
        _decoder(out_std=None)


def test_patch_position_embedding_is_fixed_sincos():
    dec = _decoder(num_queries=3)
    assert torch.allclose(dec.patch_pos[0], sincos_2d(32, 4, 4))
    names = set(dict(dec.named_parameters()))
    assert 'patch_pos' not in names and 'query_pos' in names
    assert 'patch_pos' not in dec.state_dict()
    # Positions matter: moving a patch latent changes more than its pixels.
    patch, query = _latents(q=3)
    rolled = patch.roll(1, dims=-1)
    out = dec(patch, query)
    out_rolled = dec(rolled, query)
    assert not torch.allclose(out_rolled, out.roll(8, dims=-1), atol=1e-3)


def test_query_position_embedding_init():
    dec = _decoder(num_queries=64)
    assert dec.query_pos.shape == (1, 64, 32)
    assert abs(dec.query_pos.std().item() - 0.02) < 0.005


def test_gradients_and_checkpointing_agree():
    patch, query = _latents(q=3)
    grads = []
    outs = []
    for ckpt in (False, True):
        dec = _decoder(num_queries=3, grad_checkpointing=ckpt)
        dec.train()
        out = dec(patch, query)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append(dec.blocks[0].attn.q.weight.grad.clone())
        assert dec.query_pos.grad.abs().sum() > 0
        assert dec.last_layer is dec.head.weight
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.parametrize('q', [None, 1, 4])
def test_wrong_query_count_raises(q):
    dec = _decoder(num_queries=3)
    patch, _ = _latents()
    query = None if q is None else torch.randn(2, q, 24)
    with pytest.raises(ValueError, match='query'):
        dec(patch, query)


def test_query_to_patch_only_decoder_raises():
    dec = _decoder()
    patch, query = _latents(q=3)
    with pytest.raises(ValueError, match='query'):
        dec(patch, query)


def test_wrong_grid_raises():
    dec = _decoder()
    with pytest.raises(ValueError, match='patch latents'):
        dec(torch.randn(2, 24, 5, 5))


@pytest.mark.parametrize('kwargs,name', [
    (dict(arch='H'), 'arch'),
    (dict(arch=dict(width=32, depth=2)), 'arch'),
    (dict(num_queries=-1), 'num_queries'),
])
def test_constructor_checks(kwargs, name):
    with pytest.raises(ValueError, match=name):
        _decoder(**kwargs)
