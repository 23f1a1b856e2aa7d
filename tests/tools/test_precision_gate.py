"""tools/analysis/precision_gate.py: the verdict, the curves read from a
run's scalars.json, the structured synthetic latents, and a CPU dry run of
both precisions through tools/train.py on the demo recipe."""
import json

import pytest
import torch
from tiny_models import load_tool

from decq_plugin.benchmark.gpu import precision_gate as gate


def _run(precision, loss, skipped=0, rc=0):
    return dict(precision=precision, rc=rc, skipped_updates=skipped,
                loss=list(loss), step=list(range(1, len(loss) + 1)))


def test_judge_passes_within_tolerance_and_fails_otherwise():
    ref = _run('bf16', [3.0] * 8 + [1.0, 1.0])
    close = _run('fp8', [3.0] * 8 + [1.005, 1.005])
    far = _run('fp8', [3.0] * 8 + [1.02, 1.02])
    verdict = gate.judge(ref, close, steps=10, tail=2, tolerance=0.01)
    assert verdict['passed'] and verdict['rel_diff'] == pytest.approx(0.005)
    assert not gate.judge(ref, far, 10, 2, 0.01)['passed']
    # a skipped update or a short run fails whatever the losses say
    assert not gate.judge(ref, _run('fp8', close['loss'], skipped=1), 10, 2,
                          0.01)['passed']
    short = gate.judge(ref, _run('fp8', close['loss'][:9]), 10, 2, 0.01)
    assert not short['passed'] and not short['complete']
    failed = gate.judge(ref, _run('fp8', close['loss'], rc=1), 10, 2, 0.01)
    assert failed['complete'] and not failed['clean_exit']
    assert not failed['passed']


def test_stage1_is_judged_on_its_reconstruction_losses():
    """The total of stage 1 adds the adversarial term; the gate compares
    L1 + LPIPS, so a different adversarial term alone does not fail it
    and a different reconstruction loss does."""
    def run(precision, l1, gan):
        out = _run(precision, [a + 0.1 + g for a, g in zip(l1, gan)])
        out['components'] = dict(loss_l1=list(l1), loss_gan=list(gan),
                                 loss_perceptual=[0.1] * len(l1))
        return out
    metric = gate.GATE_METRIC[1]
    ref = run('bf16', [0.5] * 4, [0.0] * 4)
    same_rec = run('fp8', [0.5] * 4, [-0.3] * 4)
    verdict = gate.judge(ref, same_rec, 4, 2, 0.01, metric)
    assert verdict['passed'] and verdict['rel_diff'] == 0
    assert verdict['metric'] == 'loss_l1+loss_perceptual'
    assert verdict['reference_mean'] == pytest.approx(0.6)
    assert not gate.judge(ref, run('fp8', [0.55] * 4, [0.0] * 4), 4, 2,
                          0.01, metric)['passed']
    # the total would have failed the first pair
    assert not gate.judge(ref, same_rec, 4, 2, 0.01)['passed']
    # a record without the components cannot be judged on them, and says
    # why (not a short run)
    bare = gate.judge(_run('bf16', [1.0] * 4), _run('fp8', [1.0] * 4),
                      4, 2, 0.01, metric)
    assert not bare['complete'] and not bare['metric_logged']
    assert not bare['passed']
    assert verdict['metric_logged']


def test_a_zero_reference_mean_fails_instead_of_dividing_by_zero():
    verdict = gate.judge(_run('bf16', [0.0] * 4), _run('fp8', [0.0] * 4),
                         4, 2, 0.01)
    assert verdict['rel_diff'] == float('inf') and not verdict['passed']


def test_a_record_of_something_else_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"no \['batch', 'runs'\]"):
        gate.write_verdict(dict(stage=2, steps=4), str(tmp_path), 2, 0.01)
    runs = [dict(precision='bf16', rc=0, step=[1], loss=[1.0])]
    with pytest.raises(ValueError, match='skipped_updates'):
        gate.write_verdict(dict(stage=2, steps=1, batch=2, runs=runs),
                           str(tmp_path), 1, 0.01)


def test_read_scalars_takes_loss_and_grad_norm_per_step(tmp_path):
    vis = tmp_path / '20261203_000000' / 'vis_data'
    vis.mkdir(parents=True)
    rows = [dict(loss=2.0, grad_norm=0.5, step=1, loss_l1=1.0, mse_q=3.0),
            dict(lr=1e-4, step=1),  # a row without loss is not a step
            dict(loss=1.5, grad_norm=0.25, step=2, loss_l1=0.5, mse_q=2.0)]
    (vis / 'scalars.json').write_text(
        '\n'.join(json.dumps(r) for r in rows) + '\n')
    got = gate.read_scalars(str(tmp_path))
    assert got['step'] == [1, 2] and got['loss'] == [2.0, 1.5]
    assert got['grad_norm'] == [0.5, 0.25]
    assert got['components'] == dict(loss_l1=[1.0, 0.5], mse_q=[3.0, 2.0])
    # a component missing from a later row reads as NaN, not a KeyError
    rows[2].pop('mse_q')
    (vis / 'scalars.json').write_text(
        '\n'.join(json.dumps(r) for r in rows) + '\n')
    got = gate.read_scalars(str(tmp_path))['components']['mse_q']
    assert got[0] == 3.0 and got[1] != got[1]
    assert gate.read_scalars(str(tmp_path / 'none'))['loss'] == []


def test_structured_latents_have_class_structure(tmp_path):
    from decq_plugin.datasets.latent_dataset import CachedLatentDataset
    gate.write_structured_latents(str(tmp_path), {'patch': (4, 2, 2)},
                                  count=300, classes=3)
    data = CachedLatentDataset(str(tmp_path), use_flip=False)
    assert len(data) == 300
    items = [data[i] for i in range(300)]
    xs = torch.stack([it['inputs']['patch'].float().flatten()
                      for it in items])
    ys = torch.tensor([it['data_samples']['gt_label'] for it in items])
    means = torch.stack([xs[ys == c].mean(0) for c in range(3)])
    within = torch.stack([(xs[ys == c] - means[c]).var(0).mean()
                          for c in range(3)]).mean()
    between = means.var(0).mean()
    assert between > within  # class means stand out of the spread


@pytest.mark.slow
def test_dry_run_trains_both_precisions_and_writes_the_record(tmp_path):
    tool = load_tool('analysis/precision_gate', 'decq_precision_gate')
    out = tmp_path / 'out'
    result = tool.main(['--dry-run', '--stage', '2', '--out-dir', str(out),
                        '--commit', 'abc123'])
    saved = json.loads((out / 'precision_gate_stage2.json').read_text())
    assert saved['commit'] == 'abc123'
    assert [r['precision'] for r in saved['runs']] == ['bf16', 'fp8']
    for run in saved['runs']:
        assert run['rc'] == 0 and len(run['loss']) == 2
        assert len(run['grad_norm']) == 2
    # on the CPU both compute in float32: the same curve, so the gate passes
    assert saved['runs'][0]['loss'] == saved['runs'][1]['loss']
    assert saved['gate']['passed'] and result['gate'] == saved['gate']
    assert (out / 'precision_gate_stage2.png').stat().st_size > 0
    # the second half of a split run, against the first's record
    again = tool.main(['--dry-run', '--stage', '2', '--precisions', 'fp8',
                       '--against', str(out / 'precision_gate_stage2.json'),
                       '--out-dir', str(tmp_path / 'second')])
    assert [r['precision'] for r in again['runs']] == ['bf16', 'fp8']
    assert again['gate']['passed']
    # judged again from the record alone, with another tail
    judged = tool.main(['--judge', str(out / 'precision_gate_stage2.json'),
                        '--tail', '1', '--out-dir', str(tmp_path / 'j')])
    assert judged['gate']['passed'] and judged['gate']['tail'] == 1
    assert judged['runs'] == saved['runs']
    assert judged['first_verdict'] == saved['gate']
    assert judged['judged_again']['command'].startswith('--judge')
    assert (tmp_path / 'j' / 'precision_gate_stage2.png').exists()


def test_each_data_set_gets_its_own_folder(tmp_path, monkeypatch):
    """Another batch (epoch length) or a dry run writes a new folder
    instead of reusing samples of another size."""
    written = []
    monkeypatch.setattr(gate, 'write_structured_latents',
                        lambda root, *a, **k: written.append(root))
    monkeypatch.setattr(gate, 'latent_shapes',
                        lambda config: {'patch': (4, 2, 2)})
    for batch in (2, 4, 2):
        gate.gate_config(2, str(tmp_path), batch=batch, steps=200, dry=True)
    assert written[0] == written[2] != written[1]
    assert written[0].endswith('data2_demo_200')
    args = load_tool('analysis/precision_gate', 'decq_gate_args')
    with pytest.raises(SystemExit):
        args.parse_args(['--tail', '0'])
    with pytest.raises(SystemExit):  # two runs would share a work folder
        args.parse_args(['--precisions', 'bf16,bf16'])


@pytest.mark.parametrize('parallel', [False, True])
def test_parallel_runs_overlap_and_keep_their_order(tmp_path, monkeypatch,
                                                    parallel):
    """``--parallel`` starts every precision's run before any ends; the
    record keeps the order asked for (the first is the reference)."""
    import threading
    import time
    events, barrier = [], threading.Barrier(2, timeout=5)

    def fake_run(stage, precision, config, work, compile, timeout):
        events.append(('start', precision))
        if parallel:
            barrier.wait()  # raises unless both runs are under way
        time.sleep(0.05 if precision == 'bf16' else 0.0)
        events.append(('end', precision))
        return dict(precision=precision, rc=0, skipped_updates=0,
                    step=[1, 2], loss=[1.0, 0.5], grad_norm=[1.0, 1.0])

    monkeypatch.setattr(gate, 'run_precision', fake_run)
    monkeypatch.setattr(gate, 'gate_config', lambda *a: 'cfg.py')
    monkeypatch.setattr(gate, 'plot_runs', lambda *a: None)
    result = gate.run_gate(2, str(tmp_path), {}, steps=2, batch=2,
                           precisions=['bf16', 'fp8'], tail=2,
                           tolerance=0.01, parallel=parallel)
    assert [r['precision'] for r in result['runs']] == ['bf16', 'fp8']
    assert result['gate']['passed']
    starts = [i for i, e in enumerate(events) if e[0] == 'start']
    first_end = min(i for i, e in enumerate(events) if e[0] == 'end')
    assert (max(starts) < first_end) == parallel


def test_gate_config_keeps_ema_and_switches_the_grids_off(tmp_path):
    """The gate's override of a shipped recipe: EMA as shipped, no image
    grid during or after training (sampling after the last step took the
    time of a whole run's tail on the GPU)."""
    from mmengine.config import Config
    from decq_plugin.benchmark.gpu.plan import STAGE2
    from decq_plugin.benchmark.gpu.tool_runs import ROOT
    shipped = Config.fromfile(f'{ROOT}/{STAGE2}').custom_hooks
    text = gate.quiet_hooks(STAGE2)
    hooks = eval(text.split('=', 1)[1])
    assert [h['type'] for h in hooks] == [h['type'] for h in shipped]
    assert 'SampleGridHook' in [h['type'] for h in hooks]
    for hook, before in zip(hooks, shipped):
        if hook['type'].endswith('GridHook'):
            assert hook['after_train'] is False
            assert hook['interval'] >= 10**9
        else:
            assert hook == dict(before)
