"""The ``decq_plugin`` registries: their place in MMEngine's registry tree,
lazy import by name, and building modules of other OpenMMLab scopes."""
import json
import subprocess
import sys
from pathlib import Path

import mmengine.registry as mm_registry
import pytest
import torch
from mmengine.registry import MODELS, Registry

import decq_plugin.registry as registry

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMES = [name for name in registry.__all__ if name != 'SCOPE']


def _run_fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter (repo root on the path); return the
    JSON object it prints on its last line."""
    result = subprocess.run([sys.executable, '-c', code],
                            cwd=str(REPO_ROOT),
                            capture_output=True,
                            text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('name', NAMES)
def test_registry_is_child_of_mmengine_root(name):
    child = getattr(registry, name)
    root = getattr(mm_registry, name)
    assert isinstance(child, Registry)
    assert child.scope == 'decq_plugin'
    assert child.parent is root
    assert root.children['decq_plugin'] is child


def test_all_lists_every_registry_of_mmengine():
    mmengine_names = {
        name for name in dir(mm_registry)
        if isinstance(getattr(mm_registry, name), Registry)
    }
    assert mmengine_names == set(NAMES)


# Runs in one new interpreter (imports are slow, so both checks share it).
# 1. Nothing of decq_plugin is imported by hand: a config only names types,
#    with 'decq_plugin' as the default scope.
# 2. Every module is imported (the full member list of each registry); then,
#    for each registry on its own, all decq_plugin modules are forgotten,
#    every registry emptied, and only that registry's lazy import (its
#    ``locations``) is run. A member in a module that its registry's
#    locations do not reach could not be built by name from a config.
FRESH_INTERPRETER = r"""
import json, sys
from mmengine.registry import MODELS, TRANSFORMS, DefaultScope
DefaultScope.get_instance('lazy-build-test', scope_name='decq_plugin')
before = sorted(m for m in sys.modules if m.startswith('decq_plugin'))
loss = MODELS.build(dict(type='FlowMatchingLoss'))
crop = TRANSFORMS.build(dict(type='AdmCenterCrop', size=32))
lazy = dict(before=before, loss=type(loss).__module__,
            crop=type(crop).__module__, size=crop.size)

import decq_plugin.registry as registry
from decq_plugin.utils import register_all_modules
register_all_modules(init_default_scope=False)
names = [n for n in registry.__all__ if n != 'SCOPE']
regs = {n: getattr(registry, n) for n in names}
full = {n: {k: v.__module__ for k, v in r.module_dict.items()}
        for n, r in regs.items()}
keep = {'decq_plugin', 'decq_plugin.registry'}
reached = {}
for n, reg in regs.items():
    if not full[n] or not reg._locations:
        continue
    for m in [m for m in sys.modules
              if m.startswith('decq_plugin.') and m not in keep]:
        del sys.modules[m]
    for other in regs.values():
        other._module_dict.clear()
        other._imported = False
    reg.import_from_location()
    reached[n] = sorted(reg.module_dict)
locations = {n: list(r._locations) for n, r in regs.items()}
print(json.dumps(dict(lazy=lazy, full=full, reached=reached,
                      locations=locations)))
"""


@pytest.fixture(scope='module')
def fresh_interpreter() -> dict:
    return _run_fresh(FRESH_INTERPRETER)


def test_build_by_name_in_fresh_interpreter(fresh_interpreter):
    out = fresh_interpreter['lazy']
    assert out['before'] == []
    assert out['loss'] == 'decq_plugin.models.losses.flow_matching'
    assert out['crop'] == 'decq_plugin.datasets.transforms'
    assert out['size'] == 32


def test_locations_reach_every_member(fresh_interpreter):
    full = fresh_interpreter['full']
    reached = fresh_interpreter['reached']
    locations = fresh_interpreter['locations']
    assert full['MODELS'], 'no model registered at all'
    problems = []
    for name, members in full.items():
        if not members:
            continue
        if not locations[name]:
            problems.append(f'{name} has members {sorted(members)} but no '
                            'locations')
            continue
        missing = sorted(set(members) - set(reached[name]))
        if missing:
            where = {member: members[member] for member in missing}
            problems.append(
                f'{name} (locations {locations[name]}) does not reach '
                f'{where}')
    assert not problems, '\n'.join(problems)


def test_mmpretrain_backbone_builds_in_decq_scope(decq_scope):
    vit = MODELS.build(
        dict(
            type='mmpretrain.VisionTransformer',
            arch=dict(
                embed_dims=32,
                num_layers=2,
                num_heads=2,
                feedforward_channels=64),
            img_size=32,
            patch_size=8,
            out_type='featmap'))
    assert type(vit).__module__.startswith('mmpretrain.')
    assert len(vit.layers) == 2
    with torch.no_grad():
        out = vit(torch.rand(1, 3, 32, 32))
    assert out[-1].shape == (1, 32, 4, 4)


def test_timm_model_builds_through_mmpretrain_timm_backbone(decq_scope):
    net = MODELS.build(
        dict(
            type='mmpretrain.TIMMBackbone',
            model_name='vit_tiny_patch16_224',
            pretrained=False,
            img_size=32,
            depth=1))
    assert type(net).__name__ == 'TIMMBackbone'
    assert len(net.timm_model.blocks) == 1
    with torch.no_grad():
        out = net(torch.rand(1, 3, 32, 32))
    assert out[-1].shape[0] == 1


def test_unknown_type_is_a_key_error_naming_it(decq_scope):
    with pytest.raises(KeyError, match='NoSuchDecqModel'):
        MODELS.build(dict(type='NoSuchDecqModel'))


def test_scope_prefix_reaches_decq_registry_from_any_scope():
    # 'decq_plugin.Name' works even where the default scope is another one.
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        cls = MODELS.get('decq_plugin.FlowMatchingLoss')
    assert cls is not None
    assert cls.__module__ == 'decq_plugin.models.losses.flow_matching'
