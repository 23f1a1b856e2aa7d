"""``tools/train.py`` and sampling runs on synthetic data, in subprocesses,
with img/s read from their own output."""
import json
import os.path as osp
import re
import subprocess
import sys
import time

from .plan import ROOT, Plan
from .synthetic_data import latent_shapes, write_jpegs, write_latent_shards

RESULT_PREFIX = 'WORKER_RESULT '


def parse_train_log(log: str, batch: int, skip_windows: int = 1) -> dict:
    """img/s from ``tools/train.py``'s log: the logger's windowed step
    times, the first window(s) (compilation) skipped, the median kept."""
    times = [float(v) for v in re.findall(r'\btime: ([\d.]+)', log)]
    data = [float(v) for v in re.findall(r'\bdata_time: ([\d.]+)', log)]
    mem = [int(v) for v in re.findall(r'\bmemory: (\d+)', log)]
    losses = re.findall(r'\bloss: ([-\d.naninf]+)', log)
    out = dict(step_times=times, data_times=data,
               memory_mib=mem[-1] if mem else None, last_losses=losses[-3:])
    steady = times[skip_windows:] or times
    if steady:
        median = sorted(steady)[len(steady) // 2]
        out.update(step_s=median, img_s=round(batch / median, 1))
    return out


def override_config(path: str, base: str, body: str) -> str:
    """Write a config at ``path`` inheriting ``base`` (relative to the
    repository) with ``body`` on top; returns ``path``."""
    with open(path, 'w') as f:
        f.write(f'_base_ = [{osp.join(ROOT, base)!r}]\n{body}')
    return path


def image_sizes(dry: bool) -> tuple:
    """Synthetic JPEGs for stage 1: (file size, crop, resize)."""
    return ((80, 60), 64, 72) if dry else ((500, 375), 256, 384)


def train_data_body(stage: int, data: str, batch: int, dry: bool) -> str:
    """The ``train_dataloader`` override of a recipe onto synthetic data:
    a latent folder (stage 2) or a folder of JPEGs (stage 1)."""
    if stage == 2:
        return (f'train_dataloader = dict(batch_size={batch}, dataset=dict('
                f'data_root={data!r}, use_flip=False))\n')
    _, crop, resize = image_sizes(dry)
    return (f'train_dataloader = dict(batch_size={batch}, dataset=dict('
            f"_delete_=True, type='ImageNetDataset', data_root={data!r}, "
            f"split='train', transform=dict(type='RAETrainCrop', "
            f'resize={resize}, crop={crop})))\n')


#: stage 1's frozen networks randomly initialised (nothing to download)
RANDOM_WEIGHTS = ('tokenizer=dict(encoder=dict(pretrained=False)), '
                  'discriminator=dict(pretrained=False), '
                  'perceptual_loss=dict(pretrained_trunk=False)')


def stage1_model_body(random_weights: bool = True, extra: str = '') -> str:
    """Stage 1's ``model`` override: every loss on from the first step,
    random frozen networks, ``extra`` keys (``'k=v, ...'``) after them."""
    keys = ['disc_start=0', 'gan_start=0'] + (
        [RANDOM_WEIGHTS] if random_weights else []) + ([extra] if extra
                                                       else [])
    return f"model = dict({', '.join(keys)})\n"


def no_eval_body(epochs: int, val_interval: int, log_interval: int,
                 checkpoint_interval: int) -> str:
    """No validation, logging every ``log_interval`` steps (that window),
    no last checkpoint."""
    return ('val_dataloader = None\nval_cfg = None\nval_evaluator = None\n'
            f'train_cfg = dict(max_epochs={epochs}, '
            f'val_interval={val_interval})\n'
            f'default_hooks = dict(logger=dict(interval={log_interval}), '
            f'checkpoint=dict(interval={checkpoint_interval}, '
            'save_last=False))\n'
            f'log_processor = dict(window_size={log_interval})\n')


def run_command(cmd: list, timeout: int) -> tuple:
    """Run ``cmd`` in the repository root: (stdout + stderr, exit code),
    or (what it printed, ``'timeout'``) when it outlived ``timeout``."""
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
        return proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        out = err.stdout or ''
        return (out.decode() if isinstance(out, bytes) else out), 'timeout'


def run_train_tool(plan: Plan, stage: int, work: str,
                   timeout: int) -> dict:
    """One ``tools/train.py`` run on synthetic data; img/s from its log."""
    if stage == 2:
        data = osp.join(work, 'latents')
        classes = 8 if plan.dry else 1000
        write_latent_shards(data, latent_shapes(plan.stage2),
                            plan.iters2 * plan.batch2, classes)
        batch, config = plan.batch2, plan.stage2
        body = train_data_body(2, data, batch, plan.dry)
        if plan.dry:
            body += f'model = dict(compile={plan.compile!r})\n'
    else:
        data = osp.join(work, 'jpegs')
        write_jpegs(data, plan.iters1 * plan.batch1,
                    image_sizes(plan.dry)[0])
        batch, config = plan.batch1, plan.stage1
        body = train_data_body(1, data, batch, plan.dry) + \
            stage1_model_body(extra=f'compile={plan.compile!r}'
                              if plan.dry else '')
    body += no_eval_body(1, 1000, plan.log_interval, 1000)
    cfg = override_config(osp.join(work, f'stage{stage}.py'), config, body)
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), cfg,
           '--work-dir', osp.join(work, f'wd{stage}'), '--compile']
    t0 = time.time()
    log, rc = run_command(cmd, timeout)
    out = dict(config=config, batch=batch, rc=rc,
               wall_s=round(time.time() - t0, 1),
               **parse_train_log(log, batch, 0 if plan.dry else 1))
    if rc != 0:
        out['tail'] = log[-3000:]
    return out


def run_sample_tool(plan: Plan, work: str, timeout: int) -> dict:
    """Sampling img/s of the plan's CFG config (random weights) in a fresh
    process (:mod:`.sample_worker`): compiled, bf16 on GPUs, decoding and
    PNG writing included; a first run compiles, the second is timed."""
    opts = dict(work=work, config=plan.sample_cfg, batch=plan.sample_batch,
                num=plan.num_samples, compile=not plan.dry,
                compile_cfg=plan.compile if plan.dry else None)
    if plan.dry:
        opts.update(guidance_scale=1.5, guidance_interval=[0.0, 0.7],
                    device='cpu', num_steps=2)
    cmd = [sys.executable, '-m', 'decq_plugin.benchmark.gpu.sample_worker',
           json.dumps(opts)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines()
             if ln.startswith(RESULT_PREFIX)]
    if proc.returncode or not lines:
        return dict(rc=proc.returncode,
                    tail=(proc.stdout + proc.stderr)[-3000:])
    return json.loads(lines[-1][len(RESULT_PREFIX):])
