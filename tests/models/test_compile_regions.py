"""Compiled model regions (decq_plugin.models.compile_regions) on the CPU:
same outputs and gradients as eager, no recompilation across training
steps, state-dict keys unchanged, eager deep copies, clear errors."""
import copy

import pytest
import torch
import torch._dynamo

from decq_plugin.models.compile_regions import (compile_module,
                                                compile_regions,
                                                is_compiled,
                                                parse_compile_cfg,
                                                recompile_counts)
from decq_plugin.models.diffusion.dit_dh import DiTDH
from decq_plugin.models.losses.flow_matching import FlowMatchingLoss

TINY = dict(body_width=32, body_depth=3, body_heads=2, head_width=48,
            head_depth=2, head_heads=2)


def _tiny_dit() -> DiTDH:
    torch.manual_seed(0)
    model = DiTDH(arch=TINY, in_channels=8, grid_size=4, num_queries=2,
                  num_classes=5, class_dropout=0.0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():  # a fresh DiT-DH predicts exactly 0
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = {'patch': torch.randn(4, 8, 4, 4, generator=g),
         'query': torch.randn(4, 2, 8, generator=g)}
    return x, torch.arange(4) % 5, torch.rand(4, generator=g)


def test_regional_compile_matches_eager_without_recompiling():
    torch._dynamo.reset()
    eager = _tiny_dit().train()
    compiled = copy.deepcopy(eager)
    keys = list(compiled.state_dict())
    done = compile_regions(compiled, dict(backend='aot_eager'),
                           ['body_blocks', 'head_blocks'])
    assert done == [f'body_blocks.{i}' for i in range(3)] + [
        f'head_blocks.{i}' for i in range(2)]
    assert list(compiled.state_dict()) == keys
    loss_fn = FlowMatchingLoss()
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3)
            for m in (eager, compiled)]
    base = recompile_counts()['frames']
    frames = []
    for step in range(3):
        x, y, t = _batch(step)
        results = []
        for model, opt in zip((eager, compiled), opts):
            noise = {k: torch.randn(v.shape, generator=torch.Generator(
            ).manual_seed(10 + step)) for k, v in x.items()}
            loss = loss_fn(model, x, y, t=t, noise=noise)['loss']
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            opt.step()
            opt.zero_grad()
            results.append((loss.detach(), grads))
        torch.testing.assert_close(results[1][0], results[0][0])
        for name, grad in results[0][1].items():
            torch.testing.assert_close(results[1][1][name], grad,
                                       rtol=1e-4, atol=1e-6, msg=name)
        frames.append(recompile_counts()['frames'] - base)
    # One graph per block class and width (body, head), compiled at step 0,
    # none after.
    assert frames == [2, 2, 2]


def test_deep_copies_run_eagerly_with_their_own_weights():
    torch._dynamo.reset()
    model = _tiny_dit().eval()
    compile_regions(model, dict(backend='eager'), ['body_blocks'])
    assert is_compiled(model.body_blocks[0])
    twin = copy.deepcopy(model)
    assert not is_compiled(twin.body_blocks[0])
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(0.5)
        x, y, t = _batch(0)
        out_model, out_twin = model(x, t, y), twin(x, t, y)
        ref = copy.deepcopy(twin)(x, t, y)
    assert not torch.allclose(out_model['patch'], out_twin['patch'])
    torch.testing.assert_close(out_twin['patch'], ref['patch'])


def test_compile_spec_checks():
    assert parse_compile_cfg(False, ['a']) is None
    assert parse_compile_cfg(None, ['a']) is None
    assert parse_compile_cfg(True, ['a']) == dict(regions=['a'],
                                                  dynamic=False)
    assert parse_compile_cfg(dict(regions=['b'], mode='max-autotune'),
                             ['a']) == dict(regions=['b'],
                                            mode='max-autotune',
                                            dynamic=False)
    with pytest.raises(ValueError, match='unknown keys'):
        parse_compile_cfg(dict(regoins=['b']), ['a'])
    with pytest.raises(TypeError, match='bool or a dict'):
        parse_compile_cfg('yes', ['a'])
    with pytest.raises(ValueError, match="no attribute 'blocks'"):
        compile_regions(_tiny_dit(), True, ['blocks'])
    # A region that is None (an absent part) is skipped.
    model = _tiny_dit()
    model.extra = None
    assert compile_regions(model, dict(backend='eager'), ['extra.x']) == []


def test_memory_budget_is_checked_and_applied_during_calls():
    from torch._functorch import config
    assert parse_compile_cfg(dict(memory_budget=0.5), ['a']) == dict(
        regions=['a'], dynamic=False, memory_budget=0.5)
    for bad in (0, 1.5, True, '0.5'):
        with pytest.raises(ValueError, match='memory_budget'):
            parse_compile_cfg(dict(memory_budget=bad), ['a'])
    # enabled=False: eager (however the rest reads); True: as if absent
    assert parse_compile_cfg(dict(enabled=False, memory_budget=0.5),
                             ['a']) is None
    assert parse_compile_cfg(dict(enabled=True, memory_budget=0.5),
                             ['a'])['memory_budget'] == 0.5
    with pytest.raises(TypeError, match='enabled must be True or False'):
        parse_compile_cfg(dict(enabled='no'), ['a'])
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(config.activation_memory_budget)
            return x * 2

    probe = Probe()
    before = config.activation_memory_budget
    compile_module(probe, memory_budget=0.25, backend='eager')
    torch._dynamo.reset()
    out = probe(torch.ones(2))
    assert torch.equal(out, torch.full((2, ), 2.0))
    # Traced (and run) under the budget; restored afterwards.
    assert seen and all(v == 0.25 for v in seen)
    assert config.activation_memory_budget == before


def test_memory_budget_keeps_values_and_gradients():
    """Recomputing instead of saving changes no number (aot_eager runs the
    partitioned forward/backward graphs)."""
    loss_fn = FlowMatchingLoss()
    grads = []
    for spec in (False, dict(backend='aot_eager', memory_budget=0.3)):
        torch._dynamo.reset()
        model = _tiny_dit()
        compile_regions(model, spec, ['body_blocks', 'head_blocks'])
        torch.manual_seed(3)
        x = {'patch': torch.randn(2, 8, 4, 4), 'query': torch.randn(2, 2, 8)}
        loss_fn(model, x, torch.tensor([1, 2]))['loss'].backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()
                      if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for key in grads[0]:
        torch.testing.assert_close(grads[1][key], grads[0][key], rtol=1e-4,
                                   atol=1e-6, msg=key)
