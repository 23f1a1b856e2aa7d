"""Suite files: parsing and its errors, command-line overrides, and every
shipped suite (its configs exist; the built-in suite's tiny entries make
exactly the change their full-size ablation configs make)."""
import ast
import json
from pathlib import Path

import pytest
from mmengine.config import Config

from decq_plugin.benchmark.preflight import file_problems
from decq_plugin.benchmark.suite import (SuiteError, available_suites,
                                         find_suite, load_suite,
                                         parse_assignments, parse_suite,
                                         select, set_checkpoints,
                                         set_image_size)

ROOT = Path(__file__).resolve().parents[2]
DEMO_DECQ = 'configs/demo/decq_tiny_1xb8-16e_demo-64.py'
DEMO_RAE = 'configs/demo/rae_tiny_1xb8-16e_demo-64.py'


def _raw(**changes):
    raw = dict(name='s', dataset=dict(type='DemoImageDataset'),
               tokenizers=[dict(name='A', config=DEMO_DECQ),
                           dict(name='B', config=DEMO_RAE,
                                checkpoint='none')])
    raw.update(changes)
    return raw


def test_parse_defaults_and_checkpoint_forms():
    suite = parse_suite(_raw(), str(ROOT))
    assert [e.name for e in suite.tokenizers] == ['A', 'B']
    assert suite.tokenizers[0].checkpoint is None
    assert suite.tokenizers[1].checkpoint is None  # 'none' = random
    assert suite.metrics == ['psnr', 'ssim', 'rfid', 'lpips']
    assert suite.lpips == dict(net='vgg', pretrained_trunk=True,
                               trunk_weights_path=None)
    assert suite.rfid == dict(feature_extractor=None)
    assert suite.throughput == dict(batch_size=64, warmup=3, repeats=10)
    partial = parse_suite(_raw(throughput=dict(repeats=2)), str(ROOT))
    assert partial.throughput == dict(batch_size=64, warmup=3, repeats=2)


@pytest.mark.parametrize('changes, match', [
    (dict(typo=1), r"unknown keys \['typo'\]"),
    (dict(tokenizers=[dict(name='A', config='x.py', chekpoint='c')]),
     r"tokenizers\[0\]: unknown keys \['chekpoint'\]"),
    (dict(tokenizers=[dict(name='A')]), "'config'"),
    (dict(tokenizers=[dict(name='A', config='a'), dict(name='A',
                                                       config='b')]),
     r"repeated: \['A'\]"),
    (dict(tokenizers=[]), 'lists no tokenizers'),
    (dict(metrics=['psnr', 'fid']), 'metrics must be'),
    (dict(batch_size=0), 'batch_size must be a positive int'),
    (dict(dataset=dict(data_root='x')), "'dataset' must be a dataset"),
    (dict(autocast='fp8'), 'autocast must be one of'),
    (dict(lpips=dict(net='squeeze')), 'lpips.net'),
    (dict(throughput=dict(warmup=-1)), 'throughput.warmup'),
])
def test_parse_errors_name_the_problem(changes, match):
    with pytest.raises(SuiteError, match=match):
        parse_suite(_raw(**changes), str(ROOT))


def test_missing_config_and_checkpoint_are_named(tmp_path):
    ckpt = str(tmp_path / 'gone.pth')
    suite = parse_suite(_raw(tokenizers=[
        dict(name='Mine', config='configs/nope.py'),
        dict(name='Other', config=DEMO_DECQ, checkpoint=ckpt)]), str(ROOT))
    configs, problems = file_problems(suite)
    assert len(problems) == 2  # both at once
    assert "tokenizer 'Mine': config file not found: 'configs/nope.py'" in \
        problems[0]
    assert f"tokenizer 'Other': checkpoint not found: '{ckpt}'" in \
        problems[1]
    assert '--checkpoint "Other=PATH"' in problems[1]
    assert list(configs) == ['Other']
    (tmp_path / 'gone.pth').write_bytes(b'x')
    suite.tokenizers = suite.tokenizers[1:]
    configs, problems = file_problems(suite)
    assert problems == []
    assert Path(configs['Other']).resolve() == ROOT / DEMO_DECQ


def test_overrides():
    assert parse_assignments(['DecQ Q=4=a/b.pth', 'RAE=none'], 'x') == {
        'DecQ Q=4': 'a/b.pth', 'RAE': 'none'}
    with pytest.raises(SuiteError, match='NAME=VALUE'):
        parse_assignments(['noequals'], '--checkpoint')
    suite = parse_suite(_raw(), str(ROOT))
    set_checkpoints(suite, {'A': 'a.pth', 'B': 'none'})
    assert [e.checkpoint for e in suite.tokenizers] == ['a.pth', None]
    with pytest.raises(SuiteError, match=r"no tokenizers \['C'\]"):
        set_checkpoints(suite, {'C': 'c.pth'})
    select(suite, ['B'])
    assert [e.name for e in suite.tokenizers] == ['B']
    with pytest.raises(SuiteError, match=r"--only: no tokenizers \['A'\]"):
        select(suite, ['A'])


def test_find_suite(tmp_path):
    assert find_suite('builtin') == str(ROOT / 'configs/benchmark/'
                                        'builtin.json')
    own = tmp_path / 'own.json'
    own.write_text(json.dumps(_raw()))
    assert find_suite(str(own)) == str(own)
    assert load_suite(str(own)).name == 's'
    with pytest.raises(FileNotFoundError, match="suite 'nope'"):
        find_suite('nope')
    own.write_text('{')
    with pytest.raises(SuiteError, match='not valid JSON'):
        load_suite(str(own))


SHIPPED = available_suites(str(ROOT))


def test_shipped_suites_listed():
    assert {'builtin', 'main', 'table3_paradigms', 'table4_decoders',
            'table5_queries', 'condenser_layers'} <= set(SHIPPED)


@pytest.mark.parametrize('name', SHIPPED)
def test_shipped_suite_configs_exist(name):
    suite = load_suite(name)
    assert suite.name == name
    for entry in suite.tokenizers:
        for path in (entry.config, entry.full_size_config):
            assert path is None or (ROOT / path).is_file(), path
        if name != 'builtin':
            # full-size suites read the stage-1 runs' default outputs
            stem = Path(entry.config).stem
            assert entry.checkpoint == f'work_dirs/{stem}/epoch_16.pth'
            assert suite.lpips['pretrained_trunk'] is True
            assert suite.rfid['feature_extractor'] is None  # Inception


def _flatten(cfg, prefix=''):
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


def _parent(path: Path) -> Path:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and node.targets[0].id == '_base_':
            base, = ast.literal_eval(node.value)
            return (path.parent / base).resolve()
    raise AssertionError(f'{path} has no single _base_')


def _diff(child: Path, parent: Path) -> dict:
    a = _flatten(Config.fromfile(str(child)).to_dict())
    b = _flatten(Config.fromfile(str(parent)).to_dict())
    return {k: a.get(k) for k in set(a) | set(b) if a.get(k) != b.get(k)}


def _normal(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def test_builtin_entries_mirror_the_full_size_ablations():
    """A tiny entry = the demo config of its paradigm + exactly the change
    its full-size config makes to that paradigm's full-size config."""
    demo_parent = {DEMO_DECQ: _parent(ROOT / DEMO_DECQ),
                   DEMO_RAE: _parent(ROOT / DEMO_RAE)}
    suite = load_suite('builtin')
    assert len(suite.tokenizers) == 10
    for entry in suite.tokenizers:
        assert entry.checkpoint is None
        full = (ROOT / entry.full_size_config).resolve()
        base = demo_parent[entry.config]
        if not entry.cfg_options:
            assert full == base, entry.name
            continue
        assert _parent(full) == base, entry.name
        change = {k: _normal(v) for k, v in _diff(full, base).items()}
        assert change == {k: _normal(v)
                          for k, v in entry.cfg_options.items()}, entry.name


def test_demo_rae_differs_from_demo_decq_only_in_the_tokenizer():
    diff = _diff(ROOT / DEMO_DECQ, ROOT / DEMO_RAE)
    assert diff.pop('model.tokenizer.type') == 'DecQTokenizer'
    assert diff and all(k.startswith('model.tokenizer.condenser.')
                        for k in diff)


def test_configs_readme_commands_name_real_files():
    """Every config path, suite and tool the README names exists, and its
    shell blocks parse."""
    import re
    import subprocess
    text = (ROOT / 'configs' / 'README.md').read_text()
    paths = set(re.findall(r'configs/[\w./-]+?\.py', text))
    paths |= {f'configs/{p}' for p in re.findall(
        r'`((?:rae|decq|ablations|ldm|demo)/[\w.-]+\.py)`', text)}
    assert len(paths) >= 20
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert missing == []
    suites = set(re.findall(r'--suite ([a-z]\w+)', text)) - {'path'}
    assert suites == set(SHIPPED)
    for tool in set(re.findall(r'(?<![\w/])tools/[\w/]+\.(?:py|sh)',
                                   text)):
        assert (ROOT / tool).is_file(), tool
    blocks = re.findall(r'```bash\n(.*?)```', text, flags=re.S)
    assert any('stage2() {' in b for b in blocks)
    for block in blocks:
        subprocess.run(['bash', '-n'], input=block, text=True, check=True)


def test_set_image_size():
    suite = load_suite('main')  # ImageNet, ADM centre crop
    set_image_size(suite, 128)
    assert suite.dataset['transform'] == dict(type='AdmCenterCrop', size=128)
    builtin = load_suite('builtin')  # the bundled photos
    set_image_size(builtin, 32)
    assert builtin.dataset['image_size'] == 32
    plain = parse_suite(_raw(dataset=dict(type='ImageNetDataset',
                                          data_root='d')), str(ROOT))
    set_image_size(plain, 64)  # no transform: the default crop, resized
    assert plain.dataset['transform'] == dict(type='AdmCenterCrop', size=64)
    other = parse_suite(_raw(dataset=dict(type='CachedLatentDataset')),
                        str(ROOT))
    with pytest.raises(SuiteError, match='--image-size'):
        set_image_size(other, 64)
