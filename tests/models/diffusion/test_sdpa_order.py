"""The SDPA backend order of DiT-DH's attention (``attention_backends``):
resolved names, the order in force inside every SDPA call (forward, a
checkpointed block's recomputation, a compiled block) and unchanged values.
"""
import pytest
import torch
import torch.nn.functional as F

import decq_plugin.models.diffusion.layers as layers
from decq_plugin.models.diffusion.layers import Attention, attend
from decq_plugin.models.sdpa_order import (CUDNN_FIRST, resolve_order,
                                           sdpa_order)
from test_dit_dh import Q, labels, latents, randomize, tiny

# torch._C's numbering of SDPBackend members, as _get_sdp_priority_order
# reports them.
CODES = dict(math=0, flash=1, efficient=2, cudnn=3)


def test_resolve_order():
    assert resolve_order(True) == CUDNN_FIRST == ('cudnn', 'flash',
                                                  'efficient', 'math')
    assert resolve_order(None) is None
    assert resolve_order(False) is None
    assert resolve_order('torch') is None
    assert resolve_order('flash') == ('flash', 'cudnn', 'efficient', 'math')
    assert resolve_order(['efficient', 'flash']) == ('efficient', 'flash',
                                                     'math')
    assert resolve_order(('math', )) == ('math', )
    for bad in ('cudn', ['cudnn', 'cudnn'], [], ['flash', 'sdpa']):
        with pytest.raises(ValueError, match='attention_backends'):
            resolve_order(bad)


def test_context_sets_the_priority_and_restores_it():
    before = torch._C._get_sdp_priority_order()
    with sdpa_order(('cudnn', 'efficient', 'math')):
        order = torch._C._get_sdp_priority_order()
        assert order[:3] == [3, 2, 0]
        assert not torch.backends.cuda.flash_sdp_enabled()
    assert torch._C._get_sdp_priority_order() == before
    assert torch.backends.cuda.flash_sdp_enabled()
    with sdpa_order(None):
        assert torch._C._get_sdp_priority_order() == before


class _OrderSpy:
    """Records the priority order in force at each SDPA call."""

    def __init__(self, monkeypatch):
        self.seen = []
        real = F.scaled_dot_product_attention

        def spy(*args, **kwargs):
            self.seen.append(tuple(torch._C._get_sdp_priority_order()[:4]))
            return real(*args, **kwargs)

        monkeypatch.setattr(layers.F, 'scaled_dot_product_attention', spy)


def _codes(names):
    return tuple(CODES[n] for n in names)


@pytest.mark.parametrize('fused', [False, True])
def test_every_attention_call_runs_under_the_model_order(monkeypatch, fused):
    """Forward and the recomputation of checkpointed blocks in the
    backward (plain and fused blocks) both see cuDNN first."""
    spy = _OrderSpy(monkeypatch)
    model = randomize(tiny(Q, fused_kernels=fused, grad_checkpoint=True))
    attns = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(attns) == 4 and all(a.sdpa_order == CUDNN_FIRST for a in attns)
    outside = tuple(torch._C._get_sdp_priority_order()[:4])
    assert outside != _codes(CUDNN_FIRST)  # PyTorch's own order differs
    out = model(latents(num_queries=Q), torch.rand(2), labels())
    assert len(spy.seen) == 4
    (out['patch'].sum() + out['query'].sum()).backward()
    assert len(spy.seen) == 8  # every block recomputed its attention
    assert set(spy.seen) == {_codes(CUDNN_FIRST)}
    assert tuple(torch._C._get_sdp_priority_order()[:4]) == outside


def test_none_keeps_pytorch_order_and_values_do_not_change(monkeypatch):
    torch.manual_seed(0)
    default = randomize(tiny(Q))
    torch.manual_seed(0)
    plain = randomize(tiny(Q, attention_backends=None))
    assert all(m.sdpa_order is None for m in plain.modules()
               if isinstance(m, Attention))
    spy = _OrderSpy(monkeypatch)
    outside = tuple(torch._C._get_sdp_priority_order()[:4])
    args = (latents(num_queries=Q), torch.rand(2), labels())
    ref = plain(*args)
    assert set(spy.seen) == {outside}
    out = default(*args)
    for key in ('patch', 'query'):
        torch.testing.assert_close(out[key], ref[key])


def test_flash_first_is_passed_to_every_block():
    model = tiny(attention_backends='flash')
    orders = {m.sdpa_order for m in model.modules()
              if isinstance(m, Attention)}
    assert orders == {('flash', 'cudnn', 'efficient', 'math')}
    with pytest.raises(ValueError, match='attention_backends'):
        tiny(attention_backends='cudnn2')


def test_compiled_model_traces_the_order_without_graph_breaks(monkeypatch):
    """``torch.compile`` traces the context (no graph break) and gives the
    eager values."""
    torch._dynamo.reset()
    model = randomize(tiny(Q))
    args = (latents(num_queries=Q), torch.rand(2), labels())
    ref = model(*args)
    explained = torch._dynamo.explain(model)(*args)
    assert explained.graph_break_count == 0, explained.break_reasons
    out = torch.compile(model, backend='aot_eager')(*args)
    for key in ('patch', 'query'):
        torch.testing.assert_close(out[key], ref[key])
    torch._dynamo.reset()


def test_attend_orders_split_calls_too(monkeypatch):
    spy = _OrderSpy(monkeypatch)
    qkv = [torch.randn(2, 2, 7, 8) for _ in range(3)]
    attend(*qkv, split_at=4, order=('efficient', 'math'))
    assert len(spy.seen) == 2
    assert all(seen[:2] == (2, 0) for seen in spy.seen), spy.seen
