"""Crafted config content in files: nothing named in it ever runs.

MMEngine's registries import and call a dotted ``type`` they do not know.
Every file whose content reaches a registry gets a payload that would create
a marker file: an exported folder's ``config.json`` (top level and nested,
``os.system`` and ``subprocess.call``) and a benchmark suite (its dataset,
training dataset, rFID feature extractor and a tokenizer's ``cfg_options``).
Each is refused naming the file and key, and the marker never appears; a
control builds the same payload through the registry and sees the marker.
(Checkpoints are covered by test_crafted_checkpoints.py: no checkpoint
content reaches a registry, ``meta['config']`` is dropped on load.)
"""
import json
import re
import os.path as osp
import shutil

import pytest
import torch

import fault_driver as D
from decq_plugin.apis import build_model_from_config, load_pretrained
from decq_plugin.apis.pretrained import save_pretrained
from decq_plugin.apis.pretrained_files import write_checksums
from decq_plugin.benchmark.runner import load_entry_config
from decq_plugin.benchmark.suite import SuiteError
from decq_plugin.registry import DATASETS, MODELS
from decq_plugin.utils.safe_config import UnsafeConfigError

DEMO = 'configs/demo/decq_tiny_1xb8-16e_demo-64.py'


def _touch(marker: str) -> dict:
    return dict(type='subprocess.call', args=['touch', marker])


def _system(marker: str) -> dict:
    return dict(type='os.system', command=f'touch {marker}')


# ---------------------------------------------------------- exports ------
@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model_from_config(
        osp.join(D.ROOT, DEMO), cfg_options={'model.discriminator': None})
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(D.ROOT, DEMO)).model.tokenizer.to_dict()
    cfg['encoder']['pretrained'] = False
    out = str(tmp_path_factory.mktemp('export') / 'decq')
    save_pretrained(model.tokenizer, cfg, out, 'tokenizer')
    return out


EXPORT_SLOTS = {
    'model.type': lambda m, marker: m.update(model=_system(marker)),
    'model.encoder.type': lambda m, marker: m['model'].update(
        encoder=_touch(marker)),
    'model.decoder.type': lambda m, marker: m['model'].update(
        decoder=_system(marker)),
    'model.condenser.type': lambda m, marker: m['model'].update(
        condenser=_touch(marker)),
}


@pytest.mark.parametrize('key', list(EXPORT_SLOTS))
def test_exported_folder(exported, tmp_path, key):
    marker = str(tmp_path / 'MARKER')
    folder = shutil.copytree(exported, str(tmp_path / 'folder'))
    path = osp.join(folder, 'config.json')
    with open(path) as f:
        meta = json.load(f)
    EXPORT_SLOTS[key](meta, marker)
    with open(path, 'w') as f:
        json.dump(meta, f)
    write_checksums(folder, ('config.json', 'model.safetensors'))
    with pytest.raises(UnsafeConfigError,
                       match=re.escape(f'config.json: {key}:')):
        load_pretrained(folder)
    assert not osp.exists(marker)
    if key in ('model.type', 'model.encoder.type'):  # control
        try:
            MODELS.build(meta['model'])
        except Exception:  # noqa: BLE001 - may fail after running
            pass
        assert osp.exists(marker)


# ----------------------------------------------------------- suites ------
def _suite(**changes) -> dict:
    raw = dict(name='crafted', dataset=dict(type='DemoImageDataset'),
               num_images=2, batch_size=2, metrics=['psnr'],
               tokenizers=[dict(name='A', config=DEMO, checkpoint='none')])
    raw.update(changes)
    return raw


ENCODER_OPTION = 'tokenizers[0].cfg_options.model.tokenizer.encoder.type'


def _options(options: dict) -> dict:
    return dict(tokenizers=[dict(name='A', config=DEMO, checkpoint='none',
                                 cfg_options=options)])


SUITE_SLOTS = [  # (test id, key path named in the refusal, suite changes)
    ('dataset', 'dataset.type', lambda m: dict(dataset=_touch(m))),
    ('transform', 'dataset.transform.type', lambda m: dict(dataset=dict(
        type='DemoImageDataset', transform=_touch(m)))),
    ('train', 'train.dataset.type',
     lambda m: dict(train=dict(dataset=_touch(m)))),
    ('rfid', 'rfid.feature_extractor.type',
     lambda m: dict(rfid=dict(feature_extractor=_touch(m)))),
    ('option-name', ENCODER_OPTION,
     lambda m: _options({'model.tokenizer.encoder.type': 'os.system'})),
    ('option-dict', ENCODER_OPTION, lambda m: _options(
        {'model.tokenizer.encoder': dict(_touch(m), _delete_=True)})),
]


@pytest.mark.parametrize('key,changes', [
    pytest.param(key, changes, id=name) for name, key, changes in SUITE_SLOTS])
def test_benchmark_suite(tmp_path, key, changes):
    """Through tools/benchmark_tokenizers.py, with a suite file."""
    marker = str(tmp_path / 'MARKER')
    path = str(tmp_path / 'crafted.json')
    with open(path, 'w') as f:
        json.dump(_suite(**changes(marker)), f)
    tool = D.load_tool('benchmark_tokenizers')
    with pytest.raises(SuiteError, match=re.escape(f'crafted.json: {key}:')):
        tool.main(['--suite', path, '--device', 'cpu', '--out-dir',
                   str(tmp_path / 'out'), '--no-progress'])
    assert not osp.exists(marker)


def test_suite_payloads_are_live(tmp_path):
    """Controls: the same content, built as the runner builds it."""
    marker = str(tmp_path / 'MARKER')
    DATASETS.build(_touch(marker))
    assert osp.exists(marker)
    marker2 = str(tmp_path / 'MARKER2')
    options = SUITE_SLOTS[-1][2](marker2)['tokenizers'][0]['cfg_options']
    cfg = load_entry_config(osp.join(D.ROOT, DEMO), options)
    with pytest.raises(Exception):  # noqa: B017 - fails after running
        MODELS.build(cfg.model)
    assert osp.exists(marker2)
