"""The fused ops' definitions (:mod:`decq_plugin.ops.reference`) equal the
DiT-DH layers they replace, and the fused block equals ``AdaLNBlock``
(on a CPU without Triton's interpreter the ops compute these definitions;
tests/ops/test_fused_kernels.py checks the kernels against them)."""
import copy

import pytest
import torch

from decq_plugin.models.diffusion.dit_dh import DiTDH
from decq_plugin.models.diffusion.layers import (AdaLNBlock, Attention,
                                                 RMSNorm, SwiGLU,
                                                 axial_rope_tables,
                                                 gated_residual, modulate)
from decq_plugin.ops import fused, reference
from decq_plugin.ops.fused_block import (FusedAdaLNBlock, fuse_adaln_blocks,
                                         unfuse_adaln_blocks)

TINY = dict(body_width=32, body_depth=2, body_heads=2, head_width=48,
            head_depth=1, head_heads=2)


def assert_close_scaled(got: torch.Tensor, want: torch.Tensor,
                        msg: str = '') -> None:
    """Equal up to float32 rounding relative to the tensor's largest
    value (sums of many large terms, reassociated)."""
    torch.testing.assert_close(got, want, rtol=1e-4,
                               atol=1e-5 * float(want.detach().abs().max()),
                               msg=msg)


def randomise(module: torch.nn.Module, std: float = 0.3) -> None:
    """Non-zero values everywhere (adaLN-Zero starts at zero, which would
    make a block the identity and hide every difference)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


@pytest.mark.parametrize('cond_rows', [1, 7])
def test_norm_definitions_equal_the_layers(cond_rows):
    torch.manual_seed(0)
    norm = RMSNorm(24)
    randomise(norm)
    x, update = torch.randn(2, 7, 24), torch.randn(2, 7, 24)
    shift, scale, gate = torch.randn(3, 2, cond_rows, 24).unbind(0)
    want = modulate(norm(x), shift, scale)
    got = reference.rms_norm_modulate(x, norm.weight, shift, scale, norm.eps)
    torch.testing.assert_close(got, want)
    x_new = gated_residual(x, gate, update)
    got_x, got_h = reference.add_rms_norm_modulate(
        x, gate, update, norm.weight, shift, scale, norm.eps)
    torch.testing.assert_close(got_x, x_new)
    torch.testing.assert_close(got_h, modulate(norm(x_new), shift, scale))


def test_swiglu_and_rope_definitions_equal_the_layers():
    torch.manual_seed(0)
    mlp = SwiGLU(16, 12)
    x = torch.randn(2, 5, 16)
    hidden = mlp.w_in(x)
    torch.testing.assert_close(mlp.w_out(reference.swiglu(hidden)), mlp(x))

    attn = Attention(32, 4)
    cos, sin = axial_rope_tables(8, 3, num_extra=2)
    x = torch.randn(2, 11, 32)
    qkv = attn.qkv(x).reshape(2, 11, 3, 4, 8)
    heads = reference.rope_qkv(qkv, cos, sin)
    assert heads.shape == (3, 2, 4, 11, 8) and heads.is_contiguous()
    out = torch.nn.functional.scaled_dot_product_attention(*heads.unbind(0))
    torch.testing.assert_close(
        attn.proj(out.transpose(1, 2).reshape(2, 11, 32)),
        attn(x, cos, sin))
    # the query tokens (identity rotation) pass unrotated, v never rotates
    torch.testing.assert_close(heads[:, :, :, 9:],
                               qkv.permute(2, 0, 3, 1, 4)[:, :, :, 9:])
    assert not torch.allclose(heads[0, :, :, 1:9],
                              qkv.permute(2, 0, 3, 1, 4)[0, :, :, 1:9])


def test_without_kernels_the_ops_are_the_definitions(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    x = torch.randn(2, 3, 8)
    assert not fused.kernels_run_on(x)
    w, shift, scale = torch.randn(8), torch.randn(2, 1, 8), torch.randn(2, 1,
                                                                        8)
    torch.testing.assert_close(
        fused.rms_norm_modulate(x, w, shift, scale),
        reference.rms_norm_modulate(x, w, shift, scale, 1e-6))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = fused.rms_norm_modulate(x, w, shift, scale)
    assert out.dtype == torch.bfloat16  # what the next linear would cast to


@pytest.mark.parametrize('per_token', [False, True])
def test_fused_block_equals_adaln_block(per_token):
    torch.manual_seed(0)
    block = AdaLNBlock(32, 2)
    randomise(block)
    twin = copy.deepcopy(block)
    twin.__class__ = FusedAdaLNBlock
    x = torch.randn(2, 10, 32)
    cond = torch.randn(2, 10, 32) if per_token else torch.randn(2, 32)
    cos, sin = axial_rope_tables(16, 3, num_extra=1)
    out, fused_out = block(x, cond, cos, sin), twin(x, cond, cos, sin)
    torch.testing.assert_close(fused_out, out)
    out.square().sum().backward()
    fused_out.square().sum().backward()
    for (name, p), q in zip(block.named_parameters(), twin.parameters()):
        assert_close_scaled(q.grad, p.grad, msg=name)


def test_fusing_a_model_keeps_weights_keys_and_outputs():
    torch.manual_seed(0)
    # the plain blocks (the kernels are the default)
    model = DiTDH(arch=TINY, in_channels=8, grid_size=4, num_queries=3,
                  num_classes=10, fused_kernels=False).eval()
    assert not any(type(b) is FusedAdaLNBlock for b in model.modules())
    randomise(model, std=0.1)  # larger: ill-conditioned input gradients
    twin = copy.deepcopy(model)
    assert fuse_adaln_blocks(twin) == 3
    assert all(type(b) is FusedAdaLNBlock
               for b in [*twin.body_blocks, *twin.head_blocks])
    assert list(twin.state_dict()) == list(model.state_dict())
    inputs = [{'patch': torch.randn(2, 8, 4, 4).requires_grad_(),
               'query': torch.randn(2, 3, 8).requires_grad_()}
              for _ in range(2)]
    inputs[1] = {k: v.detach().clone().requires_grad_(True)
                 for k, v in inputs[0].items()}
    t, y = torch.rand(2), torch.tensor([1, 2])
    want, got = model(inputs[0], t, y), twin(inputs[1], t, y)
    for key in want:
        assert_close_scaled(got[key], want[key])
    sum(v.square().sum() for v in want.values()).backward()
    sum(v.square().sum() for v in got.values()).backward()
    for key in want:
        assert_close_scaled(inputs[1][key].grad, inputs[0][key].grad)
    assert unfuse_adaln_blocks(twin) == 3
    assert type(twin.body_blocks[0]) is AdaLNBlock
