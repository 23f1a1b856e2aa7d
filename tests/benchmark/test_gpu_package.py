"""decq_plugin.benchmark.gpu holds the code of the GPU analysis scripts:
the scripts no longer load each other by file path, the names
``tools/analysis/gpu_smoke.py`` takes from ``benchmark_gpu.py`` are the
package's, and the parts work when called from Python."""
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from decq_plugin.benchmark import gpu

ANALYSIS = Path(__file__).resolve().parents[2] / 'tools' / 'analysis'
SMOKE_NAMES = ('write_jpegs', 'latent_shapes', 'write_latent_shards',
               'parse_train_log')


def _script(name):
    spec = importlib.util.spec_from_file_location(
        f'decq_test_{name}', ANALYSIS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_scripts_import_the_package_instead_of_each_other():
    for path in sorted(ANALYSIS.glob('*.py')):
        text = path.read_text()
        assert 'spec_from_file_location' not in text, path.name
        assert not re.search(r'_sibling\(|_load_script\(', text), path.name
    assert not (ANALYSIS / 'bf16_stability.py').exists()


def test_gpu_smoke_names_come_from_the_package():
    bench = _script('benchmark_gpu')
    for name in SMOKE_NAMES:
        assert getattr(bench, name) is getattr(gpu, name), name
        assert getattr(gpu, name).__module__.startswith(
            'decq_plugin.benchmark.gpu.'), name


def test_plan_sizes_from_keywords():
    full = gpu.Plan(quick=True, batch2=256, batch1=32)
    assert (full.batch2, full.batch1, full.step_batch) == (256, 32, 256)
    assert full.iters2 == 20 and full.num_samples == 128
    assert full.stage1.startswith('configs/decq/')
    assert (Path(gpu.ROOT) / full.stage2).is_file()
    dry = gpu.Plan(dry_run=True, batch2=256)
    assert dry.device == 'cpu' and dry.batch2 == 4
    assert dry.compile == dict(backend='eager')


def test_parts_are_checked_before_any_work(tmp_path):
    plan = gpu.Plan(dry_run=True)
    with pytest.raises(ValueError, match='fly'):
        gpu.run_benchmark(plan, str(tmp_path), {}, parts=['matmul', 'fly'])
    with pytest.raises(ValueError, match='fly'):
        gpu.run_profile(plan, str(tmp_path), {}, parts=['fly'])
    assert not list(tmp_path.iterdir())


def test_latent_shards_and_shapes_of_a_demo_config(tmp_path):
    from decq_plugin.datasets.latent_dataset import CachedLatentDataset
    shapes = gpu.latent_shapes(gpu.plan.DEMO2)
    assert set(shapes) == {'patch', 'query'}
    gpu.write_latent_shards(str(tmp_path), shapes, 5, num_classes=3)
    dataset = CachedLatentDataset(str(tmp_path), use_flip=False)
    assert len(dataset) == 5
    assert tuple(dataset[0]['inputs']['patch'].shape) == shapes['patch']
