"""tools/analysis/gpu_smoke.py, the GPU acceptance run: its verdicts, and
every step of stage 1 on shrunk models on the CPU (``--dry-run``)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    'decq_tool_gpu_smoke', ROOT / 'tools' / 'analysis' / 'gpu_smoke.py')
smoke = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(smoke)


def test_fault_hooks_keep_the_recipe_hooks_and_kill_mid_epoch_2(tmp_path):
    cfg = dict(custom_hooks=[dict(type='EMAHook', momentum=0.1)])
    hooks = smoke._fault_hooks(cfg, {}, 6, str(tmp_path))
    assert hooks[0] == dict(type='EMAHook', momentum=0.1)
    fault = hooks[-1]
    assert fault['type'] == 'FaultInjectionHook'
    assert 6 < fault['kill_iter'] <= 12 and fault['nan_iters'] == [2]
    assert fault['kill_marker'].startswith(str(tmp_path))


def test_a_failed_step_keeps_its_log_tail_and_fails_the_table():
    step = smoke._judge(dict(returncode=1, _text='x' * 5000 + 'Traceback'),
                        False)
    assert not step['ok'] and step['tail'].endswith('Traceback')
    assert '_text' not in step
    results = dict(date='d', gpu='g', torch='t', commit='c', tree='t',
                   ok=False,
                   runs=[dict(stage=1, gpus=1, steps=dict(test=step))])
    table = smoke.to_markdown(results)
    assert '| 1 | 1 | test | FAILED |' in table
    assert table.rstrip().endswith('Acceptance: FAILED')


@pytest.mark.slow
def test_dry_run_of_stage_1_passes_every_step(tmp_path):
    results = smoke.main(['--dry-run', '--stages', '1', '--iters', '4',
                          '--out-dir', str(tmp_path)])
    steps = results['runs'][0]['steps']
    failed = {k: v.get('why', '') + v.get('tail', '')[-1500:]
              for k, v in steps.items() if not v['ok']}
    assert not failed, failed
    assert set(steps) == {
        'train_epoch1_nan_val_ema', 'resume_across_epoch_end_then_sigkill',
        'auto_resume_after_kill', 'test', 'compute_latent_stats',
        'extract_latents', 'extract_latents_verify',
        'export_load_pretrained', 'convert_rae_checkpoint'}
    first = steps['train_epoch1_nan_val_ema']['checks']
    assert first['ema_swapped'] and first['nonfinite_skips']
    assert steps['resume_across_epoch_end_then_sigkill']['returncode'] == -9
    assert steps['auto_resume_after_kill']['checks']['epoch'] == 3
    saved = json.loads((tmp_path / 'gpu_smoke_stage1.json').read_text())
    assert saved['ok'] and len(saved['commit']) >= 40
