"""The quality gate of a training precision (``fp8`` against ``bf16``),
through ``tools/train.py``: the same recipe, initialisation, data and
random draws, one run per precision; per-step loss and gradient norm from
the run's own ``scalars.json``.

Stage 2 trains the shipped DiT-DH-XL DecQ recipe on structured synthetic
latents (class means plus a low-rank spread: the loss falls as on real
latents instead of sitting at the noise floor); stage 1 trains the shipped
DecQ tokenizer recipe (every loss on from the first step) on synthetic
JPEGs (its tokenizer optimizer's gradient norm is logged through a clip
bound of 1e9, never reached). The verdict (:func:`judge`): the mean of
the stage's judged loss (:data:`GATE_METRIC`) over the last ``tail`` steps
within ``tolerance`` of the reference precision's, no skipped (non-finite)
update, every step logged, every run exited cleanly.
"""
import glob
import json
import os
import os.path as osp
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

import torch

from .plan import ROOT, STAGE1, STAGE2
from .synthetic_data import (class_structure, latent_shapes,
                             structured_samples, write_jpegs)
from .tool_runs import (image_sizes, no_eval_body, override_config,
                        run_command, stage1_model_body, train_data_body)

DEMO = dict(
    stage1='configs/demo/decq_tiny_1xb8-16e_demo-64.py',
    stage2='configs/demo/ldm_dit-dh-tiny_decq-tiny_1xb16-40e_demo-64.py')
#: steps per epoch of the synthetic sets (the recipes are epoch-based)
STEPS_PER_EPOCH = 100


def write_structured_latents(root: str, shapes: Dict[str, tuple], count: int,
                             classes: int, seed: int = 0,
                             rank: int = 16) -> None:
    """``count`` float16 latents of ``shapes`` in a latent folder (see
    :func:`.synthetic_data.structured_samples`), written 256 at a time.
    Kept when ``root`` already holds them."""
    from decq_plugin.datasets.latent_dataset import LatentShardWriter
    if osp.isfile(osp.join(root, 'meta.json')):
        return
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (count, ), generator=g)
    parts = {key: class_structure(classes, int(torch.tensor(shape).prod()),
                                  rank, g)
             for key, shape in shapes.items()}
    with LatentShardWriter(root, shard_size=1024, tokenizer='synthetic',
                           normalised=True) as writer:
        for start in range(0, count, 256):
            idx = labels[start:start + 256]
            writer.add({key: structured_samples(means, basis, idx, g).reshape(
                idx.shape[0], *shapes[key]).half()
                for key, (means, basis) in parts.items()}, idx)


def gate_config(stage: int, work: str, batch: int, steps: int,
                dry: bool) -> str:
    """An override of the shipped recipe (the demo one in a dry run):
    synthetic data, ``steps`` iterations in epochs of ``STEPS_PER_EPOCH``,
    every step logged, no validation, no checkpoints, no image grids."""
    per_epoch = min(STEPS_PER_EPOCH, steps)
    if steps % per_epoch:
        raise ValueError(f'steps ({steps}) must be a multiple of '
                         f'{per_epoch}')
    epochs = steps // per_epoch
    count = per_epoch * batch
    # one folder per data set: a rerun with another batch (epoch length)
    # or a dry run before a real one must not reuse the wrong samples
    data = osp.join(work, f"data{stage}_{'demo' if dry else 'full'}_{count}")
    if stage == 2:
        config = DEMO['stage2'] if dry else STAGE2
        write_structured_latents(data, latent_shapes(config), count,
                                 classes=8 if dry else 1000)
        body = train_data_body(2, data, batch, dry)
    else:
        config = DEMO['stage1'] if dry else STAGE1
        write_jpegs(data, count, image_sizes(dry)[0])
        body = (
            train_data_body(1, data, batch, dry)
            + stage1_model_body(random_weights=not dry)
            # the recipe does not clip; a bound never reached makes the
            # tokenizer's optimizer log its gradient norm
            + 'optim_wrapper = dict(tokenizer=dict(clip_grad=dict('
            'max_norm=1e9)))\n')
    body += quiet_hooks(config) + no_eval_body(
        epochs, epochs + 1, 1, 1000000) + 'randomness = dict(seed=0)\n'
    return override_config(osp.join(work, f'gate_stage{stage}.py'), config,
                           body)


#: the per-step quantity each stage is judged on: stage 2's loss (the
#: flow-matching MSE of patches and queries); stage 1's reconstruction
#: losses (L1 + LPIPS), because its total adds the adversarial term, whose
#: sign flips and whose adaptive weight is recomputed every step
GATE_METRIC = {1: ('loss_l1', 'loss_perceptual'), 2: ('loss', )}


def quiet_hooks(config: str) -> str:
    """The recipe's ``custom_hooks`` (EMA as shipped) with its image grids
    switched off: a grid after the last step (sampling or decoding with the
    EMA model) adds minutes that do not bear on the curves."""
    from decq_plugin.utils.launch import load_config
    hooks = []
    for hook in load_config(osp.join(ROOT, config)).get('custom_hooks', []):
        hook = dict(hook)
        if hook['type'].endswith('GridHook'):
            hook.update(interval=10**9, after_train=False)
        hooks.append(hook)
    return f'custom_hooks = {hooks!r}\n'


def read_scalars(work_dir: str) -> Dict[str, list]:
    """Per-step ``loss``, ``grad_norm`` (the first optimizer's, where a
    model has several) and every logged loss component (``components``:
    the keys starting with ``loss_`` or ``mse_``) from the run's
    ``vis_data/scalars.json``."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    if not files:
        return dict(step=[], loss=[], grad_norm=[], components={})
    rows = [json.loads(line) for line in open(files[-1]) if line.strip()]
    rows = [r for r in rows if 'loss' in r and 'step' in r]
    first = rows[0] if rows else {}
    norm_key = 'grad_norm' if 'grad_norm' in first else next(
        (k for k in first if k.endswith('grad_norm')), None)
    parts = [k for k in first if k.startswith(('loss_', 'mse_'))]
    return dict(step=[int(r['step']) for r in rows],
                loss=[float(r['loss']) for r in rows],
                grad_norm=[float(r[norm_key]) for r in rows]
                if norm_key else [], grad_norm_key=norm_key,
                components={k: [float(r.get(k, 'nan')) for r in rows]
                            for k in parts})


def metric_curve(run: dict, metric: tuple) -> List[float]:
    """The per-step sum of ``metric``'s keys (``loss`` or components)."""
    curves = [run['loss'] if key == 'loss' else
              run.get('components', {}).get(key) for key in metric]
    if any(c is None for c in curves):
        return []
    return [sum(values) for values in zip(*curves)]


def run_precision(stage: int, precision: str, config: str, work: str,
                  compile: bool, timeout: int) -> dict:
    """One ``tools/train.py`` run; the curves and the skipped updates."""
    work_dir = osp.join(work, f'stage{stage}_{precision}')
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
           '--work-dir', work_dir, '--precision', precision]
    if compile:
        cmd.append('--compile')
    t0 = time.time()
    log, rc = run_command(cmd, timeout)
    curves = read_scalars(work_dir)
    out = dict(precision=precision, rc=rc, seconds=round(time.time() - t0, 1),
               skipped_updates=log.count('skipped the update of optimizer'),
               **curves)
    if rc != 0:
        out['tail'] = log[-3000:]
    return out


def judge(reference: dict, candidate: dict, steps: int, tail: int,
          tolerance: float, metric: tuple = ('loss', )) -> dict:
    """The gate: both runs logged every step and exited cleanly, no
    skipped update, the candidate's mean ``metric`` (see
    :data:`GATE_METRIC`) over the last ``tail`` steps within ``tolerance``
    (relative) of the reference's."""
    runs = (reference, candidate)
    curves = [metric_curve(r, metric) for r in runs]
    out = dict(metric='+'.join(metric), tail=tail, tolerance=tolerance,
               metric_logged=all(curves) or not any(r['loss'] for r in runs),
               complete=all(len(c) == steps for c in curves),
               clean_exit=all(r['rc'] == 0 for r in runs),
               skipped_updates=sum(r['skipped_updates'] for r in runs))
    if out['complete']:
        ref, got = (sum(c[-tail:]) / tail for c in curves)
        rel = abs(got - ref) / abs(ref) if ref else float('inf')
        out.update(reference_mean=round(ref, 6), candidate_mean=round(got, 6),
                   rel_diff=round(rel, 5))
    out['passed'] = bool(out['complete'] and out['clean_exit']
                         and out['skipped_updates'] == 0
                         and out['rel_diff'] <= tolerance)
    return out


def plot_runs(runs: List[dict], title: str, path: str,
              metric: tuple = ('loss', )) -> None:
    """The judged loss (``metric``) and gradient-norm curves of the runs
    side by side (PNG)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        for ax, values in zip(axes, (metric_curve(run, metric),
                                     run.get('grad_norm'))):
            if values:
                ax.plot(run['step'][:len(values)], values,
                        label=run['precision'], linewidth=0.7, alpha=0.8)
    axes[0].set(xlabel='step', ylabel=' + '.join(metric), title=title)
    axes[1].set(xlabel='step', ylabel='gradient norm (before clipping)',
                yscale='log')
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        else:  # stage 1's optimizers log no gradient norm
            ax.text(0.5, 0.5, 'not logged', ha='center', va='center',
                    transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_gate(stage: int, out_dir: str, env: dict, steps: int, batch: int,
             precisions: List[str], tail: int, tolerance: float,
             compile: bool = True, dry: bool = False,
             timeout: int = 3600, work: Optional[str] = None,
             earlier: Optional[dict] = None, parallel: bool = False) -> dict:
    """Every precision's run, then the verdict of the second run against
    the first (``earlier``: a previous result of the same stage, steps and
    batch whose runs of other precisions come first, e.g. the bf16 run of
    another command; ``parallel``: this call's runs at the same time, on
    the same GPU: the curves do not depend on timing, up to the rounding
    of the kernel configurations each process picks);
    writes ``precision_gate_stage{N}.json``/``.png``."""
    work = work or osp.join(out_dir, 'work')
    os.makedirs(work, exist_ok=True)
    config = gate_config(stage, work, batch, steps, dry)
    result = dict(env, stage=stage, steps=steps, batch=batch, runs=[])
    if earlier is not None:
        for key in ('stage', 'steps', 'batch'):
            if earlier.get(key) != result[key]:
                raise ValueError(f'the earlier result has {key}='
                                 f'{earlier.get(key)!r}, this run '
                                 f'{result[key]!r}')
        # its runs of other precisions come first (this call's replace)
        result['runs'] = [r for r in earlier['runs']
                          if r['precision'] not in precisions]
        result['earlier_commit'] = earlier.get('commit')

    def one(precision: str) -> dict:
        run = run_precision(stage, precision, config, work, compile, timeout)
        print('run', {k: v for k, v in run.items() if k not in (
            'step', 'loss', 'grad_norm', 'components', 'tail')}, flush=True)
        return run

    if parallel and len(precisions) > 1:
        with ThreadPoolExecutor(len(precisions)) as pool:
            result['runs'] += list(pool.map(one, precisions))
    else:
        result['runs'] += [one(precision) for precision in precisions]
    return write_verdict(result, out_dir, tail, tolerance)


def write_verdict(result: dict, out_dir: str, tail: int,
                  tolerance: float) -> dict:
    """Judge the second run of ``result`` against the first (when there
    are two) and write ``precision_gate_stage{N}.json``/``.png``."""
    missing = [k for k in ('stage', 'steps', 'batch', 'runs')
               if k not in result]
    missing += sorted({k for run in result.get('runs', ())
                       for k in ('precision', 'rc', 'skipped_updates',
                                 'step', 'loss') if k not in run})
    if missing:
        raise ValueError(f'not a record of precision_gate: no {missing}')
    stage, steps = result['stage'], result['steps']
    metric = GATE_METRIC[stage]
    if len(result['runs']) >= 2:
        result['gate'] = judge(result['runs'][0], result['runs'][1], steps,
                               min(tail, steps), tolerance, metric)
        print('gate', result['gate'], flush=True)
    name = osp.join(out_dir, f'precision_gate_stage{stage}')
    with open(name + '.json', 'w') as f:
        json.dump(result, f)
    plot_runs(result['runs'], f"stage {stage}, batch {result['batch']}, "
              f"{result.get('gpu', 'cpu')}", name + '.png', metric)
    return result
