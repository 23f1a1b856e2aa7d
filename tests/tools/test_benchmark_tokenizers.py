"""tools/benchmark_tokenizers.py end to end on the bundled photos: the
built-in suite writes every output, its PSNR equals psnr() of
reconstructions computed here (random weights and a checkpoint), reruns
read stored results instead of evaluating, and missing files are named
before anything is computed."""
import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from decq_plugin.apis import build_tokenizer_from_config
from decq_plugin.benchmark import runner as runner_module
from decq_plugin.datasets.demo_images import DemoImageDataset
from decq_plugin.evaluation.metrics.reconstruction import psnr

ROOT = Path(__file__).resolve().parents[2]
DEMO_DECQ = 'configs/demo/decq_tiny_1xb8-16e_demo-64.py'
DEMO_RAE = 'configs/demo/rae_tiny_1xb8-16e_demo-64.py'
FAST = ['--repeats', '1', '--warmup', '0', '--throughput-batch', '4',
        '--no-progress']


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'decq_tool_benchmark_tokenizers',
        ROOT / 'tools' / 'benchmark_tokenizers.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


@pytest.fixture
def decq_checkpoint(tmp_path) -> str:
    """A stage-1-style checkpoint of the tiny DecQ with seed-123 weights."""
    torch.manual_seed(123)
    tok = build_tokenizer_from_config(str(ROOT / DEMO_DECQ))
    path = tmp_path / 'decq_tiny.pth'
    torch.save({'state_dict': {f'tokenizer.{k}': v
                               for k, v in tok.state_dict().items()}}, path)
    return str(path)


@pytest.fixture
def count_evaluations(monkeypatch):
    """Counts the reconstruction evaluations of the runner."""
    calls = []
    original = runner_module.evaluate_reconstruction

    def counting(tokenizer, *args, **kwargs):
        calls.append(kwargs.get('desc'))
        return original(tokenizer, *args, **kwargs)

    monkeypatch.setattr(runner_module, 'evaluate_reconstruction', counting)
    return calls


def _independent_psnr(config: str, checkpoint, num_images: int) -> float:
    """Mean PSNR of decode(encode(x)) over the first demo val images."""
    torch.manual_seed(0)  # the suite's seed, for random weights
    tok = build_tokenizer_from_config(str(ROOT / config), checkpoint)
    data = DemoImageDataset(mode='val', image_size=64)
    images = torch.stack([data[i]['inputs'] for i in range(num_images)])
    with torch.inference_mode():
        recon = tok.decode(tok.encode(images))
    return psnr(recon, images).mean().item()


def test_builtin_suite_end_to_end(tmp_path, decq_checkpoint):
    out = tmp_path / 'bench'
    gfid = tmp_path / 'gfid.json'
    gfid.write_text(json.dumps({'RAE': 2.16, 'DecQ': {'gfid': 1.8}}))
    run = tool.main(['--suite', 'builtin', '--out-dir', str(out),
                     '--num-images', '8', '--checkpoint',
                     f'DecQ={decq_checkpoint}', '--generation', str(gfid),
                     *FAST])
    assert set(run['paths']) == {'markdown', 'csv', 'json', 'plot'}
    for path in run['paths'].values():
        assert os.path.getsize(path) > 0
    assert (out / 'tradeoff.png').read_bytes()[:4] == b'\x89PNG'
    summary = json.loads((out / 'benchmark.json').read_text())
    rows = {r['name']: r for r in summary['rows']}
    assert len(rows) == 10 and len(list((out / 'results').iterdir())) == 10
    assert summary['rows'][0]['name'] == 'RAE'
    assert summary['rows'][0]['encode_vs_first'] == 1.0
    for row in rows.values():
        assert row['num_images'] == 8
        for key in ('psnr', 'ssim', 'rfid', 'lpips', 'encode_vs_first',
                    'decode_vs_first', 'encode_flops', 'params'):
            assert row[key] is not None and row[key] == row[key], key
        assert row['encode_vs_first'] == pytest.approx(
            row['encode_images_per_s'] / rows['RAE']['encode_images_per_s'])
    assert rows['DecQ']['gfid'] == 1.8 and rows['DecQ Q=4']['gfid'] is None
    assert rows['DecQ']['random_weights'] is False
    assert rows['RAE']['random_weights'] is True
    assert rows['DecQ']['condenser_params'] > 0 == rows['RAE'][
        'condenser_params']
    assert rows['DecQ Q=16']['params'] > rows['DecQ Q=4']['params']
    # The numbers are those of the tokenizers, computed independently.
    assert rows['DecQ']['psnr'] == pytest.approx(
        _independent_psnr(DEMO_DECQ, decq_checkpoint, 8), rel=1e-9)
    assert rows['RAE']['psnr'] == pytest.approx(
        _independent_psnr(DEMO_RAE, None, 8), rel=1e-9)
    markdown = (out / 'benchmark.md').read_text()
    assert '| DecQ | ' in markdown and '(x1.00)' in markdown
    assert 'NOT comparable with published LPIPS' in markdown
    with open(out / 'benchmark.csv') as f:
        assert [r['name'] for r in csv.DictReader(f)] == list(rows)


def _suite_file(tmp_path, checkpoint: str) -> str:
    raw = json.loads((ROOT / 'configs/benchmark/builtin.json').read_text())
    raw['num_images'] = 4
    raw['tokenizers'] = [
        dict(name='DecQ', config=DEMO_DECQ, checkpoint=checkpoint),
        dict(name='RAE', config=DEMO_RAE),
        dict(name='RAE again', config=DEMO_RAE)]
    path = tmp_path / 'suite.json'
    path.write_text(json.dumps(raw))
    return str(path)


def test_rerun_reads_stored_results(tmp_path, decq_checkpoint,
                                    count_evaluations):
    suite = _suite_file(tmp_path, decq_checkpoint)
    args = ['--suite', suite, '--out-dir', str(tmp_path / 'o'), *FAST]
    first = tool.main(args)['results']
    # 'RAE again' is the same tokenizer as 'RAE': evaluated once
    assert count_evaluations == ['DecQ', 'RAE']
    assert first[2]['same_as'] == 'RAE'
    assert first[2]['metrics'] == first[1]['metrics']
    assert 'reconstructs with the same tokenizer as' in (
        tmp_path / 'o' / 'benchmark.md').read_text()

    second = tool.main(args)['results']
    assert count_evaluations == ['DecQ', 'RAE']  # nothing recomputed
    assert [r['metrics'] for r in second] == [r['metrics'] for r in first]
    # timings are all measured again, in this run
    assert len({r['throughput']['run_id'] for r in second}) == 1
    assert second[0]['throughput']['run_id'] != \
        first[0]['throughput']['run_id']

    third = tool.main(args + ['--reuse-timing'])['results']
    assert [r['throughput'] for r in third] == [r['throughput']
                                                for r in second]

    stat = os.stat(decq_checkpoint)  # a new checkpoint: DecQ only
    os.utime(decq_checkpoint, ns=(stat.st_atime_ns,
                                  stat.st_mtime_ns + 10**9))
    tool.main(args)
    assert count_evaluations == ['DecQ', 'RAE', 'DecQ']
    tool.main(args + ['--metrics', 'psnr'])  # new settings: all again
    assert count_evaluations[3:] == ['DecQ', 'RAE']
    tool.main(args + ['--metrics', 'psnr', '--force'])
    assert count_evaluations[5:] == ['DecQ', 'RAE']
    # RAE evaluated first this time: the same numbers (the random LPIPS
    # trunk does not depend on what ran before it)
    alone = tool.main(args + ['--only', 'RAE', '--force'])['results']
    assert count_evaluations[7:] == ['RAE']
    assert alone[0]['metrics'] == first[1]['metrics']
    assert set(alone[0]['metrics']) == {'psnr', 'ssim', 'rfid', 'lpips',
                                        'num_images'}


def _broken_suite(tmp_path, checkpoint: str, **dataset) -> str:
    """The three-tokenizer suite plus a missing config and a tokenizer
    whose VFM wants pretrained weights."""
    raw = json.loads(Path(_suite_file(tmp_path, checkpoint)).read_text())
    raw['dataset'].update(dataset)
    raw['tokenizers'] += [
        dict(name='mine', config='configs/missing.py'),
        dict(name='pretrained VFM', config=DEMO_DECQ,
             cfg_options={'model.tokenizer.encoder.pretrained': True})]
    path = tmp_path / 'broken.json'
    path.write_text(json.dumps(raw))
    return str(path)


def test_every_problem_named_at_once_before_any_work(
        tmp_path, decq_checkpoint, count_evaluations):
    suite = _broken_suite(tmp_path, decq_checkpoint)
    out = tmp_path / 'o'
    with pytest.raises(tool.SuiteError) as info:
        tool.main(['--suite', suite, '--checkpoint', 'RAE again=nope.pth',
                   '--inception-weights', '/nope/inception.pth',
                   '--lpips-trunk-weights', '/nope/vgg.pth',
                   '--encoder-weights', '/nope/vfm.safetensors',
                   '--image-size', '32', '--out-dir', str(out), *FAST])
    problems = info.value.problems
    message = str(info.value)
    assert message.startswith('6 problems found before any tokenizer was '
                              'evaluated:')
    expected = [
        # each names what is wrong and the flag that fixes it
        ("tokenizer 'RAE again': checkpoint not found: 'nope.pth'",
         '--checkpoint "RAE again=PATH"'),
        ("tokenizer 'mine': config file not found: 'configs/missing.py'",
         '--tokenizer NAME CONFIG CHECKPOINT'),
        ("tokenizer 'pretrained VFM' (random weights) needs the pretrained "
         "VFM weights (weights_path='/nope/vfm.safetensors' does not exist",
         '--encoder-weights PATH'),
        ('the dataset gives 32x32 images, the tokenizers reconstruct other '
         "sizes (64x64: 'DecQ', 'RAE', 'RAE again', 'pretrained VFM')",
         '--image-size 64'),
        ("LPIPS: --lpips-trunk-weights '/nope/vgg.pth' does not exist",
         '--lpips-random-trunk'),
        ("rFID: the FID Inception-v3 weights weights-inception-2015-12-05-"
         "6726825d.pth are not here (weights_path '/nope/inception.pth' does "
         "not exist)", '--feature-extractor RandomConvFeatureExtractor'),
    ]
    assert len(problems) == len(expected)
    for problem, (what, flag) in zip(problems, expected):
        assert what in problem and flag in problem, problem
    assert count_evaluations == []
    assert not (out / 'results').exists()


def test_missing_data_root_and_size_flags(tmp_path, decq_checkpoint,
                                          count_evaluations):
    suite = _suite_file(tmp_path, decq_checkpoint)
    raw = json.loads(Path(suite).read_text())
    raw['dataset'] = dict(type='ImageFolderDataset',
                          data_root=str(tmp_path / 'no_images'))
    Path(suite).write_text(json.dumps(raw))
    with pytest.raises(tool.SuiteError) as info:
        tool.main(['--suite', suite, '--metrics', 'psnr', '--out-dir',
                   str(tmp_path / 'o'), *FAST])
    problem, = info.value.problems
    assert "dataset ImageFolderDataset: data_root '" in problem
    assert 'is not a folder' in problem and '--data-root DIR' in problem
    assert count_evaluations == []


def test_command_line_errors_exit_cleanly(tmp_path, decq_checkpoint):
    """As a user runs it: a short message on stderr, exit status 1, no
    traceback; nothing evaluated."""
    suite = _broken_suite(tmp_path, decq_checkpoint)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'benchmark_tokenizers.py'),
         '--suite', suite, '--checkpoint', 'RAE again=nope.pth',
         '--metrics', 'psnr', '--encoder-weights', '/nope/vfm.safetensors',
         '--out-dir', str(tmp_path / 'o'), *FAST],
        capture_output=True, text=True, env=env, cwd=str(tmp_path),
        timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert 'Traceback' not in proc.stderr
    assert proc.stderr.startswith('error: 3 problems found before any '
                                  'tokenizer was evaluated:\n  - ')
    assert not (tmp_path / 'o' / 'results').exists()


def test_tokenizer_list_without_suite(tmp_path):
    run = tool.main(['--tokenizer', 'tiny', DEMO_DECQ, 'none', '--dataset',
                     'demo', '--image-size', '64', '--num-images', '2',
                     '--metrics', 'psnr', '--batch-size', '2',
                     '--out-dir', str(tmp_path), *FAST])
    result, = run['results']
    assert set(result['metrics']) == {'psnr', 'num_images'}
    assert result['metrics']['num_images'] == 2


def test_argument_checks_and_overrides():
    for argv in ([], ['--suite', 'builtin', '--repeats', '0'],
                 ['--suite', 'builtin', '--lpips-random-trunk',
                  '--lpips-trunk-weights', 'vgg.pth']):
        with pytest.raises(SystemExit):
            tool.parse_args(argv)
    suite = tool.build_suite(tool.parse_args([
        '--suite', 'table3_paradigms', '--data-root', '/data/in1k',
        '--num-images', '100', '--inception-weights', 'inc.pth',
        '--lpips-trunk-weights', 'vgg.pth', '--only', 'DecQ', '--checkpoint',
        'DecQ=none']))
    assert suite.dataset['data_root'] == '/data/in1k'
    assert suite.num_images == 100
    assert suite.rfid == dict(feature_extractor=dict(
        type='InceptionV3FeatureExtractor', weights_path='inc.pth'))
    assert suite.lpips['trunk_weights_path'] == 'vgg.pth'
    assert [(e.name, e.checkpoint) for e in suite.tokenizers] == [('DecQ',
                                                                   None)]
    offline = tool.build_suite(tool.parse_args([
        '--suite', 'main', '--lpips-random-trunk', '--feature-extractor',
        'RandomConvFeatureExtractor']))
    assert offline.lpips['pretrained_trunk'] is False
    assert offline.rfid['feature_extractor']['type'] == \
        'RandomConvFeatureExtractor'
    # --image-size and --encoder-weights reach a suite too
    sized = tool.build_suite(tool.parse_args([
        '--suite', 'builtin', '--image-size', '32', '--encoder-weights',
        'vfm.safetensors']))
    assert sized.dataset['image_size'] == 32
    assert sized.encoder_weights == 'vfm.safetensors'
    assert tool.build_suite(tool.parse_args([
        '--tokenizer', 'a', DEMO_DECQ, 'none'])).dataset['transform'] == \
        dict(type='AdmCenterCrop', size=256)
    with pytest.raises(tool.SuiteError, match='has no data_root'):
        tool.build_suite(tool.parse_args(['--suite', 'builtin',
                                          '--data-root', 'x']))
