"""The stage-1 tokenizer's own ``train_step`` on a device: img/s, exclusive
time per phase (encode, decode, LPIPS, discriminator, backward, optimizer
steps), kernel classes, and img/s as more regions are compiled."""
import json
import os.path as osp
import time
from collections import defaultdict
from typing import Callable, Dict, List

import torch

from .kernel_profile import profile_steps
from .synthetic_data import write_jpegs
from .timing import peak_gib, sync, timed
from .tool_runs import override_config


class PhaseTimer:
    """Exclusive seconds per named phase; a device sync at each edge."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.totals: Dict[str, float] = defaultdict(float)
        self.counts: Dict[str, int] = defaultdict(int)
        self.stack: List[list] = []
        self.enabled = True

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed_call(*args, **kwargs):
            if not self.enabled:
                return fn(*args, **kwargs)
            sync(self.device)
            now = time.perf_counter()
            if self.stack:  # pause the parent
                self.stack[-1][1] += now - self.stack[-1][2]
            self.stack.append([name, 0.0, now])
            try:
                return fn(*args, **kwargs)
            finally:
                sync(self.device)
                end = time.perf_counter()
                label, spent, start = self.stack.pop()
                self.totals[label] += spent + end - start
                self.counts[label] += 1
                if self.stack:
                    self.stack[-1][2] = end
        return timed_call

    def patch(self, obj, attr: str, name: str) -> None:
        setattr(obj, attr, self.wrap(name, getattr(obj, attr)))

    def table(self, steps: int) -> dict:
        return {k: dict(ms=round(v * 1e3 / steps, 2),
                        calls=self.counts[k] // steps)
                for k, v in sorted(self.totals.items(), key=lambda kv: -kv[1])}


def build_stage1(plan, work: str):
    """Model, optim wrapper and one batch of the stage-1 config, the way
    ``tools/train.py CONFIG --compile`` builds them (every loss on)."""
    from decq_plugin.utils.launch import (apply_precision, build_runner,
                                          choose_precision, load_config,
                                          move_compile_to_model,
                                          resolve_work_dir)
    images = osp.join(work, 'jpegs')
    size, crop, resize = ((80, 60), 64, 72) if plan.dry else \
        ((500, 375), 256, 384)
    write_jpegs(images, 2 * plan.batch1, size)
    body = (
        f'train_dataloader = dict(batch_size={plan.batch1}, num_workers=2, '
        f"persistent_workers=False, dataset=dict(_delete_=True, "
        f"type='ImageNetDataset', data_root={images!r}, split='train', "
        f"transform=dict(type='RAETrainCrop', resize={resize}, "
        f'crop={crop})))\n'
        'model = dict(disc_start=0, gan_start=0, tokenizer=dict('
        'encoder=dict(pretrained=False)), discriminator=dict('
        'pretrained=False), perceptual_loss=dict(pretrained_trunk=False)'
        + (f', compile={plan.compile!r}' if plan.dry else '') + ')\n'
        'val_dataloader = None\nval_cfg = None\nval_evaluator = None\n')
    cfg_path = override_config(osp.join(work, 'stage1.py'),
                                      plan.stage1, body)
    # What tools/train.py CFG --work-dir WD --compile does to the config.
    cfg = load_config(cfg_path)
    cfg.launcher = 'none'
    cfg.work_dir = resolve_work_dir(cfg, osp.join(work, 'wd1'), cfg_path)
    precision = choose_precision(cfg)
    if precision is not None:
        apply_precision(cfg, precision)
    move_compile_to_model(cfg, force=True)
    from decq_plugin.utils import register_all_modules
    from decq_plugin.utils.launch import set_matmul_precision
    register_all_modules(init_default_scope=False)
    set_matmul_precision(cfg.get('precision', 'fp32'))
    runner = build_runner(cfg)
    loader = runner.build_dataloader(cfg.train_dataloader)
    batch = next(iter(loader))
    wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
    wrapper.initialize_count_status(runner.model, 0, 1000)
    return runner, wrapper, batch


def bench_stage1(plan, work: str, iters: int,
                 regions: List[str]) -> dict:
    runner, wrapper, batch = build_stage1(plan, work)
    model = runner.model
    dev = plan.device
    step = lambda: model.train_step(batch, wrapper)  # noqa: E731
    out = dict(batch=plan.batch1, config=plan.stage1,
               compiled=list(getattr(model, 'compiled_regions', [])))
    t0 = time.time()
    for _ in range(2):
        log = step()
    out['first_steps_s'] = round(time.time() - t0, 1)
    out['log_keys'] = sorted(log)
    if dev == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(step, dev, iters)
    out.update(img_s=round(plan.batch1 / seconds, 1),
               step_ms=round(seconds * 1e3, 1), peak_gib=peak_gib(dev))
    # Phases: exclusive times with a sync at each edge.
    timer = PhaseTimer(dev)
    tok = model.tokenizer
    for obj, attr, name in (
            (model.data_preprocessor, 'forward', 'preprocess'),
            (tok, 'encode_raw', 'encode (VFM + condensers)'),
            (tok, 'decode_raw', 'decode (fwd)'),
            (model.perceptual_loss, 'forward', 'LPIPS (fwd)'),
            (model.discriminator, 'forward', 'discriminator (fwd)'),
            (model.diffaug, 'forward', 'DiffAug')):
        if obj is not None:
            timer.patch(obj, attr, name)
    for key in wrapper.keys():
        w = wrapper[key]
        timer.patch(w, 'backward', f'{key}: backward')
        timer.patch(w, 'step', f'{key}: optimizer step (+clip)')
    timer.patch(model, 'train_step', 'train_step (rest)')
    original_grad = torch.autograd.grad
    torch.autograd.grad = timer.wrap('autograd.grad (LPIPS/disc bwd)',
                                     original_grad)
    try:
        phases_steps = max(2, iters // 2)
        for _ in range(phases_steps):
            model.train_step(batch, wrapper)
        out['phases'] = timer.table(phases_steps)
        out['phases_total_ms'] = round(
            sum(v['ms'] for v in out['phases'].values()), 1)
    finally:
        timer.enabled = False
        torch.autograd.grad = original_grad
    out['kernels'] = profile_steps(step, 2)
    # More compiled regions, one after the other (cumulative).
    from decq_plugin.models.compile_regions import compile_regions
    spec = dict(backend='eager') if plan.dry else True
    out['more_regions'] = []
    for region in filter(None, regions):
        row = dict(added=region)
        try:
            row['compiled'] = compile_regions(model, spec, [region])
            step()
            row['img_s'] = round(plan.batch1 / timed(step, dev, iters),
                                 1)
            row['peak_gib'] = peak_gib(dev)
        except Exception as err:
            row['error'] = f'{type(err).__name__}: {err}'[:500]
        out['more_regions'].append(row)
        print('stage1', json.dumps(row), flush=True)
        if 'error' in row:
            break
    return out
