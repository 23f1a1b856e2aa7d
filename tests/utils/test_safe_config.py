"""decq_plugin.utils.safe_config: config content read from a file is refused
before any registry sees it when it names anything not registered in
decq_plugin; the same content does run through a plain registry build."""
import os
import os.path as osp
import subprocess
import sys

import pytest

from decq_plugin.registry import DATASETS, MODELS
from decq_plugin.utils.safe_config import (UnsafeConfigError,
                                           check_buildable, check_overrides,
                                           registered_names)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = 'configs/demo/decq_tiny_1xb8-16e_demo-64.py'


def _demo_tokenizer() -> dict:
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, DEMO))
    return cfg.model.tokenizer.to_dict()


def payloads(marker: str) -> dict:
    """Configs that create ``marker`` when a registry builds them, by the
    key path a refusal must name."""
    tokenizer = _demo_tokenizer()
    tokenizer['encoder'] = dict(type='subprocess.call',
                                args=['touch', marker])
    return {
        'model.type': dict(type='os.system', command=f'touch {marker}'),
        'model.encoder.type': tokenizer,
    }


@pytest.mark.parametrize('key', list(payloads('m')))
def test_payload_runs_through_a_plain_build(tmp_path, key):
    """The control: without the check, MMEngine imports and calls it."""
    marker = str(tmp_path / 'MARKER')
    try:
        MODELS.build(payloads(marker)[key])
    except Exception:  # noqa: BLE001 - the nested ones fail afterwards
        pass
    assert osp.exists(marker)


@pytest.mark.parametrize('key', list(payloads('m')))
def test_payload_is_refused_naming_the_key(tmp_path, key):
    marker = str(tmp_path / 'MARKER')
    with pytest.raises(UnsafeConfigError) as err:
        check_buildable(payloads(marker)[key], 'x/config.json', 'model',
                        MODELS)
    assert f'x/config.json: {key}:' in str(err.value)
    assert 'not a name registered' in str(err.value)
    assert not osp.exists(marker)


@pytest.mark.parametrize('cfg,key,why', [
    (dict(type=os.system, command='true'), 'model.type',
     'builtin_function_or_method'),
    (dict(type='DecQTokenizer', encoder=dict(type=dict)),
     'model.encoder.type', 'type'),
    (dict(type='DecQTokenizer', hook=print), 'model.hook', 'not plain data'),
    (dict(type='DecQTokenizer', encoder=dict(type='TimmViTEncoder',
                                             _scope_='mmpretrain')),
     'model.encoder._scope_', 'another scope'),
    (dict(type='DecQTokenizer', encoder=dict(
        type='TimmViTEncoder', model_name='hf-hub:someone/vit')),
     'model.encoder.model_name', 'plain timm model name'),
    (dict(type='DecQTokenizer', encoder=dict(
        type='MMPretrainViTEncoder', weights_path='http://x/vit.pth')),
     'model.encoder.weights_path', 'remote location'),
    (dict(type='RAETokenizer', encoder=dict(type='TimmViTEncoder'),
          decoder=dict(type='os.system', command='true')),
     'model.decoder.type', 'dotted name'),
    (dict(type='DecQTokenizer', layers=[0, dict(type='os.system')]),
     'model.layers[1].type', 'dotted name'),
    (dict(type='MMPretrainViTEncoder', backbone=dict(
        norm_cfg=dict(type='mmpretrain.LN'))),
     'model.backbone.norm_cfg.type', 'not a name registered'),
])
def test_objects_scopes_sources_refused(cfg, key, why):
    with pytest.raises(UnsafeConfigError, match=why) as err:
        check_buildable(cfg, 'f.json', 'model', MODELS)
    assert f'f.json: {key}:' in str(err.value)


def test_top_level_type_must_be_in_the_given_registry():
    check_buildable(dict(type='DemoImageDataset'), 's', 'dataset', DATASETS)
    with pytest.raises(UnsafeConfigError, match='dataset.type'):
        check_buildable(dict(type='DecQTokenizer'), 's', 'dataset', DATASETS)
    # nested names may come from any registry of the package
    check_buildable(dict(type='ImageNetDataset', transform=dict(
        type='AdmCenterCrop', size=64)), 's', 'dataset', DATASETS)


def test_registered_and_scoped_names_accepted():
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, DEMO))
    check_buildable(cfg.model.to_dict(), 'demo', 'model', MODELS)
    check_buildable(dict(type='decq_plugin.TimmViTEncoder',
                         model_name='vit_small_patch14_dinov2.lvd142m'),
                    'f', 'model', MODELS)


def test_lazily_registered_names_count_without_prior_imports():
    """Names registered through the registries' ``locations=`` are known
    although nothing imported their modules before the check."""
    code = (
        'import sys\n'
        'from decq_plugin.registry import MODELS\n'
        'from decq_plugin.utils.safe_config import check_buildable\n'
        "assert 'decq_plugin.models' not in sys.modules\n"
        "check_buildable(dict(type='DecQTokenizer', encoder=dict("
        "type='TimmViTEncoder')), 'f', 'model', MODELS)\n"
        "print('ok')\n")
    env = dict(os.environ, HF_HUB_OFFLINE='1')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'DecQTokenizer' in registered_names(MODELS)


def test_overrides(tmp_path):
    marker = str(tmp_path / 'MARKER')
    check_overrides({'model.encoder.depth': 2,
                     'model.decoder': dict(type='ViTPixelDecoder')}, 's',
                    'cfg_options')
    with pytest.raises(UnsafeConfigError,
                       match=r's: cfg_options\.model\.encoder\.type:'):
        check_overrides({'model.encoder.type': 'os.system'}, 's',
                        'cfg_options')
    with pytest.raises(UnsafeConfigError,
                       match=r'cfg_options\.model\.decoder\.type:'):
        check_overrides({'model.decoder': dict(type='subprocess.call',
                                               args=['touch', marker])},
                        's', 'cfg_options')
    assert not osp.exists(marker)
