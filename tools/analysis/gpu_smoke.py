"""The project's GPU acceptance run: both main recipes at full size, through
the real tools, on one GPU (several: the multi-GPU issue's).

    source tools/analysis/gpu_setup.sh && \
        python tools/analysis/gpu_smoke.py --stages 1 --out-dir "$OUT"

For the full stage-1 DecQ config (``configs/decq/decq_q8-l0369_...``) and
the full stage-2 DiT-DH-XL DecQ config (``configs/ldm/ldm_dit-dh-xl_decq-
q8-l0369-..._80e``), at their shipped sizes and per-GPU batch, random
weights (nothing can be downloaded) and synthetic data of ImageNet layout
(JPEGs, latent shards with checksums), each step is a tool a user runs:

1. ``tools/train.py`` for one epoch with a NaN put into iteration 2's inputs
   (``FaultInjectionHook``): the update is skipped, the epoch ends with
   validation, the EMA swapped into the checkpoint, the random states saved;
2. ``tools/train.py --resume`` across that epoch end, SIGKILLed mid-epoch 2;
3. ``tools/train.py --resume`` again (auto-resume) to the end of epoch 3;
4. ``tools/test.py`` on the last checkpoint;
5. stage 1: ``compute_latent_stats.py``, ``extract_latents.py`` with those
   statistics, then ``extract_latents.py --verify``; stage 2:
   ``tools/sample.py`` (bf16, ``--compile``) to an ADM ``.npz``;
6. ``tools/export.py`` and ``load_pretrained`` on the GPU, compared with the
   checkpoint's own model;
7. ``tools/convert_rae_checkpoint.py`` on a decoder (stage 1) or DiT-DH
   (stage 2) written in the public RAE code's layout from a full-size RAE
   config, compared with the weights it was written from.

Every step's command, exit code, time and checks go to
``OUT/gpu_smoke.json`` (with the commit) and ``.md``; img/s and memory are
read from ``tools/train.py``'s own log. ``--dry-run`` shrinks the models
(``decq_plugin/testing/shrink.py``) to run the same steps on a CPU.
"""
import argparse
import datetime
import json
import os
import os.path as osp
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from decq_plugin.utils.cli import doc_summary  # noqa: E402

STAGE1 = 'configs/decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py'
STAGE2 = ('configs/ldm/ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_'
          '8xb128-80e_in1k-256.py')
# Full-size RAE configs whose decoder / DiT-DH are written in RAE's layout
# and converted back (step 7).
RAE_STAGE1 = 'configs/rae/rae_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py'
RAE_STAGE2 = 'configs/ldm/ldm_dit-dh-xl_rae-dinov2-b-reg_8xb128-80e_in1k-256.py'  # noqa: E501
EXTRACTOR = dict(type='RandomConvFeatureExtractor', feature_dim=64,
                 num_classes=1000, input_size=64)
EPOCHS = 3
NAN_ITER = 2
CHECKS = 'decq_plugin.testing.acceptance_checks'


from decq_plugin.benchmark import gpu as bench  # noqa: E402
from decq_plugin.benchmark.gpu.provenance import provenance  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env() -> Dict[str, str]:
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep +
                os.environ.get('PYTHONPATH', ''), HF_HUB_OFFLINE='1')


def _command(tool: str, args: List[str], gpus: int) -> List[str]:
    """``tools/<tool>.py args`` (torchrun when ``gpus`` > 1); a tool name
    with a dot is a module (``python -m``)."""
    if '.' in tool:
        return [sys.executable, '-m', tool, *args]
    script = osp.join(ROOT, 'tools', f'{tool}.py')
    if gpus > 1:
        return [sys.executable, '-m', 'torch.distributed.run',
                f'--nproc_per_node={gpus}', f'--master_port={_free_port()}',
                script, *args, '--launcher', 'pytorch']
    return [sys.executable, script, *args]


def _result(cmd: List[str], code: int, start: float, log: str) -> Dict:
    with open(log, encoding='utf-8', errors='replace') as f:
        text = f.read()
    out = dict(command=' '.join(osp.relpath(c, ROOT) if c.startswith(ROOT)
                                else c for c in cmd[1:]),
               returncode=code, seconds=round(time.time() - start, 1))
    found = [json.loads(m) for m in re.findall(r'^ACCEPTANCE (.*)$', text,
                                               re.M)]
    if found:
        out['checks'] = found[-1]
    out['_text'] = text
    return out


def run_tool(tool: str, args: List[str], log: str, timeout: int,
             gpus: int = 1) -> Dict:
    """Run a tool to its end; its output goes to ``log``."""
    cmd = _command(tool, args, gpus)
    start = time.time()
    with open(log, 'w') as f:
        f.write(' '.join(cmd) + '\n')
        f.flush()
        try:
            code = subprocess.run(cmd, env=_env(), stdout=f,
                                  stderr=subprocess.STDOUT, timeout=timeout,
                                  cwd=ROOT).returncode
        except subprocess.TimeoutExpired:
            code = 124
    return _result(cmd, code, start, log)


def start_tool(tool: str, args: List[str], log: str) -> tuple:
    """Start a tool in the background: ``(process, command, start, log)``."""
    cmd = _command(tool, args, 1)
    f = open(log, 'w')
    f.write(' '.join(cmd) + '\n')
    f.flush()
    proc = subprocess.Popen(cmd, env=_env(), stdout=f,
                            stderr=subprocess.STDOUT, cwd=ROOT)
    f.close()
    return proc, cmd, time.time(), log


def finish_tool(started: tuple, timeout: int) -> Dict:
    proc, cmd, start, log = started
    try:
        code = proc.wait(max(1, timeout - (time.time() - start)))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        code = 124
    return _result(cmd, code, start, log)


def _deep_merge(base: Dict, extra: Dict) -> Dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) \
                and not value.get('_delete_'):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _write(path: str, base: str, body: Dict, dry_run: bool,
           tiny: Optional[Dict] = None) -> str:
    """A config inheriting ``base`` with ``body`` applied over (for a dry
    run) the tiny sizes of the smoke override set."""
    from decq_plugin.testing import write_shrunk_config
    overrides = _deep_merge(tiny or {}, body) if dry_run else body
    return write_shrunk_config(osp.join(ROOT, base), path, overrides)


def _fault_hooks(cfg, tiny: Dict, iters: int, work: str) -> List[Dict]:
    """The recipe's own custom hooks plus the fault injection: a NaN at
    iteration 2, a SIGKILL half-way through epoch 2 (once)."""
    hooks = list(tiny.get('custom_hooks') or cfg.get('custom_hooks') or [])
    return [dict(h) for h in hooks] + [dict(
        type='FaultInjectionHook', nan_iters=[NAN_ITER],
        kill_iter=iters + iters // 2 + 1,
        kill_marker=osp.join(work, 'killed_once'))]


def stage1_config(data: str, work: str, iters: int, gpus: int,
                  dry_run: bool) -> Dict:
    from decq_plugin.testing import shrink
    from decq_plugin.utils.launch import load_config
    cfg = load_config(osp.join(ROOT, STAGE1))
    batch = 2 if dry_run else cfg.train_dataloader.batch_size
    size = shrink.image_size(cfg.model.tokenizer) if dry_run else 256
    bench.write_jpegs(data, iters * batch * gpus, (size * 11 // 8,
                                                   size * 3 // 2))
    val_dir = osp.join(data, 'val')
    if not osp.isdir(val_dir):  # a few validation images
        os.makedirs(val_dir)
        for wnid in sorted(os.listdir(osp.join(data, 'train')))[:4]:
            os.symlink(osp.join(data, 'train', wnid), osp.join(val_dir, wnid))
    loader = dict(num_workers=1 if dry_run else 4,
                  dataset=dict(data_root=data))
    tiny = shrink.stage1_overrides(cfg, data) if dry_run else {}
    body = dict(
        model=dict(tokenizer=dict(encoder=dict(pretrained=False)),
                   perceptual_loss=dict(pretrained_trunk=False),
                   discriminator=dict(pretrained=False),
                   disc_start=0, gan_start=1),
        train_dataloader=dict(loader, batch_size=batch),
        val_dataloader=dict(loader, batch_size=batch, dataset=dict(
            data_root=data, max_samples=2 * batch)),
        test_dataloader=dict(loader, batch_size=batch, dataset=dict(
            data_root=data, max_samples=2 * batch)),
        val_evaluator=shrink.evaluator_overrides(cfg.val_evaluator, None),
        test_evaluator=shrink.evaluator_overrides(cfg.test_evaluator, None),
        custom_hooks=_fault_hooks(cfg, tiny, iters, work),
        default_hooks=dict(logger=dict(interval=max(1, iters // 2)),
                           checkpoint=dict(interval=1, max_keep_ckpts=1)),
        train_cfg=dict(max_epochs=EPOCHS, val_interval=1))
    path = _write(osp.join(data, 'stage1_smoke.py'), STAGE1, body, dry_run,
                  tiny)
    return dict(config=path, batch=batch)


def stage2_config(data: str, work: str, iters: int, gpus: int,
                  dry_run: bool) -> Dict:
    import torch

    from decq_plugin.testing import make_reference_npz, shrink
    from decq_plugin.utils.launch import load_config
    cfg = load_config(osp.join(ROOT, STAGE2))
    batch = 2 if dry_run else cfg.train_dataloader.batch_size
    stats = osp.join(data, 'stats.pt')
    reference = osp.join(data, 'reference.npz')
    latents = osp.join(data, 'latents')
    artefacts = dict(tokenizer_ckpt=None, latent_stats=stats,
                     latent_root=latents, reference=reference)
    tiny = shrink.stage2_overrides(cfg, artefacts) if dry_run else {}
    probe = _write(osp.join(data, 'probe.py'), STAGE2,
                   dict(model=dict(tokenizer=dict(latent_stats=None))),
                   dry_run, tiny)
    shapes = bench.latent_shapes(probe)
    torch.save({f'{k}_{s}': (torch.zeros(shape) if s == 'mean' else
                             torch.ones(shape))
                for k, shape in shapes.items() for s in ('mean', 'var')},
               stats)
    classes = shrink.NUM_CLASSES if dry_run else 1000
    bench.write_latent_shards(latents, shapes, iters * batch * gpus,
                              num_classes=classes)
    size = 32 if dry_run else 256
    if not osp.isfile(reference):
        make_reference_npz(reference, num_images=64, size=size)
    labels = dict(classes=list(range(min(8, classes))),
                  num_per_class=8 // min(8, classes))
    body = dict(
        model=dict(tokenizer=dict(latent_stats=stats), tokenizer_ckpt=None),
        train_dataloader=dict(batch_size=batch, num_workers=4,
                              dataset=dict(data_root=latents,
                                           use_flip=False)),
        val_dataloader=dict(batch_size=8, num_workers=2, dataset=labels),
        test_dataloader=dict(batch_size=8, num_workers=2, dataset=labels),
        val_evaluator=dict(type='GenerationMetric', reference=reference,
                           feature_extractor=EXTRACTOR),
        test_evaluator=dict(type='GenerationMetric', reference=reference,
                            feature_extractor=EXTRACTOR),
        custom_hooks=_fault_hooks(cfg, tiny, iters, work),
        default_hooks=dict(logger=dict(interval=max(1, iters // 2)),
                           checkpoint=dict(interval=1, max_keep_ckpts=1)),
        train_cfg=dict(max_epochs=EPOCHS, val_interval=1))
    if dry_run:
        body['train_dataloader']['num_workers'] = 1
        for name in ('val_evaluator', 'test_evaluator'):
            body[name]['feature_extractor'] = dict(shrink.FEATURE_EXTRACTOR)
    path = _write(osp.join(data, 'stage2_smoke.py'), STAGE2, body, dry_run,
                  tiny)
    return dict(config=path, batch=batch, reference=reference)


def rae_config(stage: int, data: str, dry_run: bool) -> str:
    """The full RAE config of ``stage`` (shrunk for a dry run)."""
    from decq_plugin.testing import shrink
    from decq_plugin.utils.launch import load_config
    base = RAE_STAGE1 if stage == 1 else RAE_STAGE2
    if not dry_run:
        return osp.join(ROOT, base)
    cfg = load_config(osp.join(ROOT, base))
    if stage == 1:
        tiny = shrink.stage1_overrides(cfg, data)
    else:
        tiny = shrink.stage2_overrides(cfg, dict(
            tokenizer_ckpt=None, latent_stats=None, latent_root=data,
            reference=osp.join(data, 'reference.npz')))
    return _write(osp.join(data, f'rae{stage}_smoke.py'), base, {}, True,
                  tiny)


# -- the steps ---------------------------------------------------------------
def _last_checkpoint(work_dir: str) -> Optional[str]:
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return f.read().strip() or None


def _judge(step: Dict, ok: bool, why: str = '') -> Dict:
    """Record the verdict; keep the log's tail when the step failed."""
    text = step.pop('_text', '')
    step['ok'] = bool(ok)
    if not ok:
        step['why'] = why or f"exit code {step.get('returncode')}"
        step['tail'] = text[-3000:]
    return step


def _inspect(path: str, log: str, timeout: int) -> Dict:
    return run_tool(CHECKS, ['checkpoint', path], log, timeout)


def train_steps(spec: Dict, work: str, gpus: int, timeout: int,
                result: Dict) -> Optional[str]:
    """Steps 1-3; returns the last checkpoint (None when one failed)."""
    cfg, train_dir = spec['config'], osp.join(work, 'train')
    steps = result['steps']
    first = run_tool('train', [cfg, '--work-dir', train_dir, '--cfg-options',
                               'train_cfg.max_epochs=1'],
                     osp.join(work, 'train1.log'), timeout, gpus)
    text = first['_text']
    ckpt = _last_checkpoint(train_dir)
    checks = _inspect(ckpt, osp.join(work, 'inspect1.log'),
                      timeout)['checks'] if ckpt else {}
    first['checks'] = checks
    first['validated'] = bool(re.search(r'Epoch\(val\)\s*\[1\]', text))
    steps['train_epoch1_nan_val_ema'] = _judge(
        first, first['returncode'] == 0 and checks.get('epoch') == 1
        and checks.get('ema_swapped') and checks.get('all_finite')
        and (checks.get('nonfinite_skips') or {}) != {}
        and checks.get('random_states') == gpus and first['validated'],
        f'exit {first["returncode"]}, checkpoint {checks}, validation '
        f'{first["validated"]}')
    logs = text
    if not steps['train_epoch1_nan_val_ema']['ok']:
        return None
    killed = run_tool('train', [cfg, '--work-dir', train_dir, '--resume'],
                      osp.join(work, 'train2_killed.log'), timeout, gpus)
    logs += killed['_text']
    resumed_1 = 'resumed epoch: 1' in killed['_text']
    killed['resumed_epoch_1'] = resumed_1
    steps['resume_across_epoch_end_then_sigkill'] = _judge(
        killed, killed['returncode'] in (-9, 137) and resumed_1 and
        'SIGKILL at iteration' in killed['_text'],
        f'expected a resume from epoch 1 and a SIGKILL in epoch 2; exit '
        f'{killed["returncode"]}')
    if not steps['resume_across_epoch_end_then_sigkill']['ok']:
        return None
    auto = run_tool('train', [cfg, '--work-dir', train_dir, '--resume'],
                    osp.join(work, 'train3_auto_resume.log'), timeout, gpus)
    logs += auto['_text']
    ckpt = _last_checkpoint(train_dir)
    checks = _inspect(ckpt, osp.join(work, 'inspect3.log'),
                      timeout)['checks'] if ckpt else {}
    auto['checks'] = checks
    steps['auto_resume_after_kill'] = _judge(
        auto, auto['returncode'] == 0 and 'resumed epoch: 1' in auto['_text']
        and checks.get('epoch') == EPOCHS and checks.get('all_finite'),
        f'exit {auto["returncode"]}, checkpoint {checks}')
    result['train_log'] = bench.parse_train_log(
        logs, spec['batch'] * gpus)
    return ckpt if steps['auto_resume_after_kill']['ok'] else None


def test_step(spec: Dict, ckpt: str, work: str, gpus: int,
              timeout: int) -> Dict:
    out = osp.join(work, 'test_metrics.json')
    step = run_tool('test', [spec['config'], ckpt, '--work-dir',
                             osp.join(work, 'test'), '--out', out],
                    osp.join(work, 'test.log'), timeout, gpus)
    if osp.isfile(out):
        with open(out) as f:
            step['metrics'] = json.load(f)
    return _judge(step, step['returncode'] == 0 and bool(
        step.get('metrics')), 'no metrics written')


def export_steps(spec: Dict, ckpt: str, work: str, timeout: int) -> Dict:
    folder = osp.join(work, 'export')
    step = run_tool('export', [spec['config'], ckpt, folder],
                    osp.join(work, 'export.log'), timeout)
    if step['returncode'] != 0:
        return _judge(step, False)
    check = run_tool(CHECKS, ['export', spec['config'], ckpt, folder],
                     osp.join(work, 'export_check.log'), timeout)
    step['load_pretrained'] = _judge(check, check['returncode'] == 0 and
                                     check.get('checks', {}).get('equal'),
                                     'loaded module computes otherwise')
    step.pop('_text', None)
    step['ok'] = step['load_pretrained']['ok']
    return step


def rae_steps(stage: int, data: str, work: str, dry_run: bool,
              timeout: int) -> Dict:
    config = rae_config(stage, data, dry_run)
    folder = osp.join(work, 'rae_files')
    made = run_tool(CHECKS, ['rae-files', config, folder],
                    osp.join(work, 'rae_files.log'), timeout)
    if made['returncode'] != 0:
        return _judge(made, False)
    source = made['checks']['file']
    out = osp.join(work, 'converted_from_rae.pth')
    flag = '--decoder' if stage == 1 else '--dit'
    extra = ['model.perceptual_loss.pretrained_trunk=False',
             'model.discriminator.pretrained=False'] if stage == 1 else [
                 'model.tokenizer_ckpt=None',
                 'model.tokenizer.latent_stats=None']
    step = run_tool('convert_rae_checkpoint', [
        config, flag, osp.join(folder, source), '--random-vfm', '--out', out,
        '--cfg-options', *extra], osp.join(work, 'convert_rae.log'), timeout)
    if step['returncode'] != 0:
        return _judge(step, False)
    check = run_tool(CHECKS, ['rae-converted', out,
                              osp.join(folder, 'reference.pt')],
                     osp.join(work, 'convert_check.log'), timeout)
    step['checks'] = check.get('checks')
    return _judge(step, bool((step['checks'] or {}).get('equal')),
                  f'converted weights differ: {step["checks"]}')


def stage1_extras(spec: Dict, ckpt: str, work: str, dry_run: bool,
                  timeout: int) -> Dict[str, Dict]:
    """Statistics, latents and their verification (one chain)."""
    cfg = spec['config']
    stats = osp.join(work, 'latent_stats.pt')
    latents = osp.join(work, 'latents')
    n = str(2 * spec['batch'])
    out = {}
    step = run_tool('compute_latent_stats', [cfg, ckpt, '--out', stats,
                                             '--max-images', n],
                    osp.join(work, 'latent_stats.log'), timeout)
    out['compute_latent_stats'] = _judge(step, step['returncode'] == 0 and
                                         osp.isfile(stats))
    if not out['compute_latent_stats']['ok']:
        return out
    step = run_tool('extract_latents', [cfg, ckpt, '--out-dir', latents,
                                        '--stats', stats, '--max-images', n],
                    osp.join(work, 'extract_latents.log'), timeout)
    out['extract_latents'] = _judge(step, step['returncode'] == 0)
    if step['returncode'] == 0:
        verify = run_tool('extract_latents', ['--verify', latents],
                          osp.join(work, 'extract_verify.log'), timeout)
        out['extract_latents_verify'] = _judge(verify,
                                               verify['returncode'] == 0)
    return out


def sample_step(spec: Dict, ckpt: str, work: str, dry_run: bool,
                timeout: int) -> Dict:
    classes, per_class = (4, 1) if dry_run else (32, 2)
    n = classes * per_class
    npz = osp.join(work, 'samples', 'samples.npz')
    args = [spec['config'], ckpt, '--out-dir', osp.join(work, 'samples'),
            '--classes', *map(str, range(classes)), '--num-per-class',
            str(per_class), '--batch-size', str(min(n, 32)),
            '--guidance-scale', '1.5', '--no-png', '--precision', 'bf16',
            '--compile']
    if dry_run:
        args += ['--device', 'cpu']
    step = run_tool('sample', args, osp.join(work, 'sample.log'), timeout)
    found = re.search(r'(\d+) made by rank 0 in ([\d.]+)s', step['_text'])
    if found:
        step['img_s'] = round(int(found.group(1)) / float(found.group(2)), 2)
    shape = None
    if osp.isfile(npz):
        import numpy as np
        with np.load(npz) as f:
            arr = f['arr_0']
            shape, dtype = list(arr.shape), str(arr.dtype)
        step['npz'] = dict(shape=shape, dtype=dtype)
    size = 32 if dry_run else 256
    return _judge(step, step['returncode'] == 0 and shape == [n, size, size, 3]
                  and step['npz']['dtype'] == 'uint8',
                  f'npz {step.get("npz")}')


def run_stage(stage: int, gpus: int, out_dir: str, iters: int,
              dry_run: bool, timeout: int) -> Dict:
    """Every step of one stage; the RAE conversion runs beside training,
    and the steps on the last checkpoint run side by side."""
    from concurrent.futures import ThreadPoolExecutor
    work = osp.join(out_dir, f'stage{stage}_{gpus}gpu')
    data = osp.join(out_dir, f'data{stage}_{gpus}gpu')
    os.makedirs(work, exist_ok=True)
    make = stage1_config if stage == 1 else stage2_config
    spec = make(data, work, iters, gpus, dry_run)
    result: Dict = dict(stage=stage, gpus=gpus, batch_per_gpu=spec['batch'],
                        iters_per_epoch=iters, steps={})
    start = time.time()
    steps = result['steps']
    with ThreadPoolExecutor(max_workers=4) as pool:
        rae = pool.submit(rae_steps, stage, data, work, dry_run, timeout)
        ckpt = train_steps(spec, work, gpus, timeout, result)
        jobs = {}
        if ckpt is not None:
            jobs['test'] = pool.submit(test_step, spec, ckpt, work, gpus,
                                       timeout)
            if stage == 1:
                jobs['extras'] = pool.submit(stage1_extras, spec, ckpt, work,
                                             dry_run, timeout)
            else:
                jobs['sample_bf16_compile'] = pool.submit(
                    sample_step, spec, ckpt, work, dry_run, timeout)
            jobs['export_load_pretrained'] = pool.submit(
                export_steps, spec, ckpt, work, timeout)
        for name, job in jobs.items():
            if name == 'extras':
                steps.update(job.result())
            else:
                steps[name] = job.result()
        steps['convert_rae_checkpoint'] = rae.result()
    result['seconds'] = round(time.time() - start, 1)
    result['ok'] = all(s.get('ok') for s in steps.values()) and \
        ckpt is not None
    return result


def to_markdown(results: Dict) -> str:
    lines = [f"# GPU acceptance run ({results['date']}, {results['gpu']}, "
             f"torch {results['torch']}, commit {results['commit']}, tree "
             f"{results['tree']})", '',
             '| stage | GPUs | step | result | seconds | detail |',
             '|---|---:|---|---|---:|---|']
    for r in results['runs']:
        for name, step in r['steps'].items():
            detail = ''
            if 'metrics' in step:
                detail = ', '.join(f'{k}={v:.4g}' for k, v in
                                   step['metrics'].items()
                                   if isinstance(v, (int, float)))
            elif 'img_s' in step:
                detail = f"{step['img_s']} img/s (rank 0)"
            elif not step.get('ok'):
                detail = step.get('why', '')[:120]
            lines.append(f"| {r['stage']} | {r['gpus']} | {name} | "
                         f"{'ok' if step.get('ok') else 'FAILED'} | "
                         f"{step.get('seconds', '-')} | {detail} |")
        log = r.get('train_log', {})
        lines.append(f"| {r['stage']} | {r['gpus']} | train img/s (log), "
                     f"memory MiB | {log.get('img_s', '-')} | - | "
                     f"{log.get('memory_mib', '-')} MiB |")
    verdict = 'PASSED' if results['ok'] else 'FAILED'
    return '\n'.join(lines + ['', f'Acceptance: {verdict}']) + '\n'


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument('--out-dir', default=os.environ.get('OUT') or
                        'work_dirs/gpu_smoke')
    parser.add_argument('--gpus', type=int, nargs='+', default=[1])
    parser.add_argument('--stages', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--iters', type=int, default=6,
                        help='iterations per epoch (per GPU count)')
    parser.add_argument('--timeout', type=int, default=300,
                        help='seconds per tool run')
    parser.add_argument('--dry-run', action='store_true')
    parser.add_argument('--commit', help='the commit whose files are run '
                        '(default: git HEAD here); the JSON also records '
                        'the tree hash of the files as run, to check it')
    args = parser.parse_args(argv)
    import torch
    os.makedirs(args.out_dir, exist_ok=True)
    name = 'gpu_smoke_stage' + ''.join(map(str, args.stages))
    results = dict(
        date=datetime.date.today().isoformat(), torch=torch.__version__,
        gpu=(torch.cuda.get_device_name(0) if torch.cuda.is_available()
             else 'cpu'), **provenance(args.commit),
        command=' '.join(sys.argv), runs=[], ok=False)
    for gpus in args.gpus:
        for stage in args.stages:
            results['runs'].append(run_stage(
                stage, gpus, args.out_dir, args.iters, args.dry_run,
                args.timeout))
            results['ok'] = all(r['ok'] for r in results['runs'])
            with open(osp.join(args.out_dir, name + '.json'), 'w') as f:
                json.dump(results, f, indent=1)
    with open(osp.join(args.out_dir, name + '.md'), 'w') as f:
        f.write(to_markdown(results))
    print(to_markdown(results))
    return results


if __name__ == '__main__':
    sys.exit(0 if main()['ok'] else 1)
