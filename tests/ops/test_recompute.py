"""``DiTDH(recompute_fused=...)``: selective recomputation of the fused
kernels' outputs (``decq_plugin.ops.recompute``). On the CPU the blocks
run the reference expressions; the kernels themselves go through Triton's
interpreter in ``kernel_cases.py`` (case ``ditdh_recompute``)."""
import copy

import pytest
import torch
from torch.utils.checkpoint import CheckpointPolicy

from decq_plugin.models.diffusion.dit_dh import DiTDH
from decq_plugin.ops import recompute

TINY = dict(body_width=32, body_depth=2, body_heads=2, head_width=48,
            head_depth=1, head_heads=2)


def _model(**kwargs) -> DiTDH:
    torch.manual_seed(0)
    model = DiTDH(arch=TINY, in_channels=8, grid_size=4, num_queries=3,
                  num_classes=10, **kwargs)
    for p in model.parameters():  # adaLN-Zero would zero every gradient
        torch.nn.init.normal_(p, std=0.1)
    return model


def _train_step(model: DiTDH) -> tuple:
    """Loss and parameter gradients of one bf16-autocast step."""
    torch.manual_seed(1)
    x = {'patch': torch.randn(2, 8, 4, 4), 'query': torch.randn(2, 3, 8)}
    t, y = torch.rand(2), torch.tensor([1, 2])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x, t, y)
    loss = sum(v.float().square().sum() for v in out.values())
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters()]


def test_recompute_gives_the_same_loss_and_gradients(monkeypatch):
    import decq_plugin.ops.fused_block as fused_block
    calls = []
    real = fused_block.checkpoint

    def spy(*args, **kwargs):
        calls.append(kwargs.get('context_fn'))
        return real(*args, **kwargs)

    monkeypatch.setattr(fused_block, 'checkpoint', spy)
    plain = _model()
    twin = _model(recompute_fused=True)
    assert twin.recompute_fused == ('norm', 'swiglu')
    assert list(twin.state_dict()) == list(plain.state_dict())
    loss, grads = _train_step(plain)
    assert calls == []
    loss2, grads2 = _train_step(twin)
    # every block (2 body + 1 head) ran under the selective checkpoint
    assert len(calls) == 3 and all(c is not None for c in calls)
    assert torch.equal(loss, loss2)
    for a, b in zip(grads, grads2):
        torch.testing.assert_close(b, a)
    # not in evaluation mode or without gradients
    calls.clear()
    with torch.no_grad():
        twin(dict(patch=torch.randn(1, 8, 4, 4),
                  query=torch.randn(1, 3, 8)), torch.rand(1),
             torch.tensor([0]))
    assert calls == []


def test_full_checkpoint_blocks_stay_full():
    model = _model(recompute_fused=('swiglu', ), grad_checkpoint=1)
    assert model.num_checkpointed == 1 and model.recompute_fused == (
        'swiglu', )
    blocks = [*model.body_blocks, *model.head_blocks]
    assert blocks[0].recompute_context is None  # recomputed whole
    assert all(b.recompute_context is not None for b in blocks[1:])
    assert _model().body_blocks[0].recompute_context is None


def test_compiled_blocks_trace_the_selective_checkpoint():
    """The checkpoint sits inside the block's forward, so a compiled block
    (``compile_regions`` compiles block by block) traces it; same loss and
    gradients as the eager plain model, no graph break."""
    from torch._dynamo.backends.registry import lookup_backend
    torch._dynamo.reset()
    plain = _model()
    twin = _model(recompute_fused=True)
    graphs = []
    partition = lookup_backend('aot_eager_decomp_partition')

    def backend(gm, example_inputs):
        graphs.append(gm.code)
        return partition(gm, example_inputs)

    for block in [*twin.body_blocks, *twin.head_blocks]:
        block.compile(backend=backend, fullgraph=True, dynamic=False)
    loss, grads = _train_step(plain)
    loss2, grads2 = _train_step(twin)
    # compiled (fullgraph: no break), the checkpoint traced into the graph
    assert graphs and all('tag_activation_checkpoint' in g for g in graphs)
    torch.testing.assert_close(loss2, loss)
    for a, b in zip(grads, grads2):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    torch._dynamo.reset()


def test_policy_keeps_gemms_and_attention_and_recomputes_the_rest():
    aten = torch.ops.aten
    policy = recompute.recompute_policy(('norm', 'swiglu'))
    save, again = CheckpointPolicy.MUST_SAVE, \
        CheckpointPolicy.PREFER_RECOMPUTE
    assert policy(None, aten.addmm.default) is save
    assert policy(None, aten.mm.default) is save
    assert policy(None, aten._scaled_dot_product_flash_attention_for_cpu
                  .default) is save
    for op in (aten.mul.Tensor, aten.add.Tensor, aten.silu.default,
               aten.clone.default):
        assert policy(None, op) is again
    pytest.importorskip('triton')
    from decq_plugin.ops import fused  # noqa: F401  (defines the ops)
    ops = torch.ops.decq_plugin
    assert policy(None, ops.norm_modulate.default) is again
    assert policy(None, ops.swiglu.default) is again
    assert policy(None, ops.rope_qkv.default) is save  # not named


@pytest.mark.parametrize('kwargs, message', [
    (dict(recompute_fused=('norms', )), 'unknown'),
    (dict(recompute_fused=True, fused_kernels=False), 'fused'),
    (dict(recompute_fused=('swiglu', ), fused_kernels=('norm', )),
     "['swiglu'] do not run as fused kernels"),
])
def test_bad_recompute_names_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message.replace('[', r'\[')
                       .replace(']', r'\]')):
        _model(**kwargs)


def test_norm_recompute_needs_either_norm_kernel():
    assert _model(recompute_fused=('norm', ),
                  fused_kernels=('add_norm', )).recompute_fused == ('norm', )
    assert _model(recompute_fused=False).recompute_fused == ()
    assert copy.deepcopy(_model(recompute_fused=True)).recompute_fused
