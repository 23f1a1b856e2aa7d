"""Training throughput against the number of GPUs: img/s per GPU read from
``tools/train.py``'s own log, for runs launched by ``tools/dist_train.sh``
(:mod:`.launch`), on one node or on several nodes simulated on this host.

For each (GPU count, node count) a config inheriting the given stage-1 or
stage-2 config is written with synthetic data of ImageNet layout (JPEGs;
latent shards and unit latent statistics for stage 2) of exactly
``iters x batch x GPUs`` samples, so every count trains ``iters``
iterations in one epoch, at the shipped per-GPU batch, random weights
(nothing is downloaded), every loss on from the first step (stage 1:
discriminator and GAN term), logging every iteration with no smoothing
(``log_processor.window_size=1``), no validation and no checkpoint.
``dry_run=True`` shrinks the models as the smoke runs do
(:mod:`decq_plugin.testing.shrink`) and runs on the CPU (gloo).

img/s per GPU = per-GPU batch / median iteration ``time`` (the first
``warmup`` iterations skipped: compilation, data-loader start); scaling =
img/s per GPU / that of the smallest count measured.
"""
import datetime
import json
import os
import os.path as osp
import statistics
from typing import Any, Dict, List, Sequence, Tuple

from .launch import launch_train

NO_VALIDATION = 10**6  # a val/checkpoint interval no short run reaches


def _deep_merge(base: Dict, extra: Dict) -> Dict:
    out = dict(base)
    for key, value in extra.items():
        if (isinstance(value, dict) and isinstance(out.get(key), dict)
                and not value.get('_delete_')):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolved(cfg: Any) -> Any:
    """``cfg`` with MMEngine's ``_delete_`` markers dropped (what the config
    means once merged)."""
    if isinstance(cfg, dict):
        return {k: _resolved(v) for k, v in cfg.items() if k != '_delete_'}
    return cfg


def write_train_images(root: str, count: int, size: Tuple[int, int],
                       unique: int = 64) -> str:
    """``count`` JPEGs in ``root/train/<wnid>/`` (and ``root/val`` linked to
    it): ``unique`` distinct images, the rest hard links to them (decoding
    costs the same, writing them does not). Returns ``root``."""
    from .. import testing
    from ..testing.synthetic import WNIDS
    done = osp.join(root, f'.complete_{count}')
    if osp.isfile(done):
        return root
    classes = len(WNIDS)
    seeds = osp.join(root, 'seeds')
    testing.make_imagenet_folder(seeds, num_classes=classes,
                                 train_per_class=-(-unique // classes),
                                 val_per_class=0, size=size[0])
    sources = sorted(osp.join(dp, f) for dp, _, fs in os.walk(
        osp.join(seeds, 'train')) for f in fs)
    for i in range(count):
        folder = osp.join(root, 'train', WNIDS[i % classes])
        os.makedirs(folder, exist_ok=True)
        path = osp.join(folder, f'img_{i:07d}.JPEG')
        if not osp.exists(path):
            os.link(sources[i % len(sources)], path)
    if not osp.exists(osp.join(root, 'val')):
        os.symlink('train', osp.join(root, 'val'))
    with open(done, 'w', encoding='utf-8') as f:
        f.write('ok\n')
    return root


def write_latents(root: str, shapes: Dict[str, tuple], count: int,
                  num_classes: int) -> str:
    """``count`` random normalised latents (float16) in shards (a folder
    of fewer, from an earlier run, is written anew)."""
    import shutil

    import torch

    from ..datasets.latent_dataset import LatentShardWriter
    meta = osp.join(root, 'meta.json')
    if osp.isfile(meta):
        with open(meta, encoding='utf-8') as f:
            if json.load(f).get('count', 0) >= count:
                return root
        shutil.rmtree(root)
    g = torch.Generator().manual_seed(0)
    with LatentShardWriter(root, shard_size=1024, tokenizer='synthetic',
                           normalised=True) as writer:
        for start in range(0, count, 256):
            n = min(256, count - start)
            writer.add({k: torch.randn(n, *s, generator=g).half()
                        for k, s in shapes.items()},
                       torch.randint(0, num_classes, (n, ), generator=g))
    return root


def latent_shapes(tokenizer_cfg: Dict) -> Dict[str, tuple]:
    """Per-sample latent shapes of a tokenizer config (built on the meta
    device, without statistics)."""
    import torch

    from ..registry import MODELS
    from ..utils import register_all_modules
    register_all_modules(init_default_scope=True)
    cfg = dict(tokenizer_cfg, latent_stats=None)
    with torch.device('meta'):
        tokenizer = MODELS.build(cfg)
    return {k: tuple(v) for k, v in tokenizer.latent_shapes.items()}


def _common_overrides(cfg) -> Dict[str, Any]:
    """One epoch, every iteration logged unsmoothed; no validation, no
    checkpoint, no image grids."""
    hooks = [dict(h, interval=NO_VALIDATION)
             if h.get('type') != 'EMAHook' and 'interval' in h else dict(h)
             for h in cfg.get('custom_hooks', []) or []]
    out: Dict[str, Any] = dict(
        train_cfg=dict(max_epochs=1, val_begin=NO_VALIDATION,
                       val_interval=NO_VALIDATION),
        default_hooks=dict(logger=dict(interval=1),
                           checkpoint=dict(interval=NO_VALIDATION,
                                           save_last=False)),
        log_processor=dict(window_size=1))
    if hooks:
        out['custom_hooks'] = hooks
    return out


def stage1_overrides(cfg, data: str, samples: int, batch: int,
                     dry_run: bool) -> Dict[str, Any]:
    """Overrides of a stage-1 config: synthetic images in ``data``, every
    loss on from the first step."""
    from ..testing import shrink
    model = cfg.model
    body: Dict[str, Any] = dict(model=dict(disc_start=0, gan_start=0))
    if dry_run:
        body = _deep_merge(shrink.stage1_overrides(cfg, data), body)
    else:
        body['model']['tokenizer'] = dict(encoder=dict(pretrained=False))
        if model.get('perceptual_loss'):
            body['model']['perceptual_loss'] = dict(pretrained_trunk=False)
        if model.get('discriminator'):
            body['model']['discriminator'] = dict(pretrained=False)
        for name in ('val_evaluator', 'test_evaluator'):
            body[name] = shrink.evaluator_overrides(cfg.get(name), None)
        for name in ('val_dataloader', 'test_dataloader'):
            body[name] = dict(dataset=dict(data_root=data, max_samples=8))
    loader = dict(batch_size=batch,
                  dataset=dict(data_root=data, max_samples=samples))
    return _deep_merge(body, dict(train_dataloader=loader))


def stage2_overrides(cfg, data: str, samples: int, batch: int,
                     dry_run: bool, data_count: int = 0) -> Dict[str, Any]:
    """Overrides of a stage-2 config; writes its latents (``data_count``,
    at least ``samples``), unit statistics and a reference batch under
    ``data``.

    Raises:
        ValueError: a config that needs a second checkpoint.
    """
    import torch

    from ..testing import make_reference_npz, shrink
    model = cfg.model
    guidance = model.get('guidance') or {}
    if model.get('decode_with') or guidance.get('type') == 'AutoGuidance':
        raise ValueError(f'{cfg.filename}: the scaling run measures stage-2 '
                         'configs that need no second checkpoint (no '
                         'model.decode_with, no AutoGuidance)')
    os.makedirs(data, exist_ok=True)
    stats = osp.join(data, 'stats.pt')
    latents = osp.join(data, 'latents')
    reference = osp.join(data, 'reference.npz')
    if dry_run:
        body = shrink.stage2_overrides(cfg, dict(
            tokenizer_ckpt=None, latent_stats=stats, latent_root=latents,
            reference=reference))
        classes = shrink.NUM_CLASSES
    else:
        classes = int(model.get('num_classes', 1000))
        body = dict(model=dict(tokenizer=dict(latent_stats=stats),
                               tokenizer_ckpt=None))
        if 'encoder' in model.tokenizer:
            body['model']['tokenizer']['encoder'] = dict(pretrained=False)
        for name in ('val_evaluator', 'test_evaluator'):
            body[name] = shrink.evaluator_overrides(cfg.get(name), reference)
    shapes = latent_shapes(_resolved(_deep_merge(
        model.tokenizer.to_dict(), body['model']['tokenizer'])))
    torch.save({f'{k}_{s}': (torch.zeros(shape) if s == 'mean' else
                             torch.ones(shape))
                for k, shape in shapes.items() for s in ('mean', 'var')},
               stats)
    write_latents(latents, shapes, max(samples, data_count), classes)
    if not osp.isfile(reference):
        make_reference_npz(reference, num_images=16, size=32)
    loader = dict(batch_size=batch, dataset=dict(
        data_root=latents, use_flip=False, max_samples=samples))
    return _deep_merge(body, dict(train_dataloader=loader))


def prepare_config(config: str, work: str, gpus: int, iters: int,
                   dry_run: bool, data_gpus: int = 1) -> Dict[str, Any]:
    """Write ``work/scaling.py``: ``config`` with synthetic data of
    ``iters x batch x gpus`` samples, taken from data written once beside
    ``work`` for up to ``data_gpus`` GPUs; returns ``{'config', 'batch',
    'stage'}``."""
    from ..testing import shrink, write_shrunk_config
    from ..utils.launch import load_config
    cfg = load_config(config)
    stage = shrink.recipe_kind(cfg)
    batch = (shrink.BATCH_SIZE if dry_run else
             int(cfg.train_dataloader.batch_size))
    samples = iters * batch * gpus
    count = iters * batch * max(gpus, data_gpus)
    os.makedirs(work, exist_ok=True)
    data = osp.join(osp.dirname(osp.abspath(work)), 'data')
    if stage == 'stage1':
        size = shrink.image_size(cfg.model.tokenizer) if dry_run else 256
        body = stage1_overrides(cfg, data, samples, batch, dry_run)
        write_train_images(data, count, (size * 11 // 8, size * 3 // 2))
    else:
        body = stage2_overrides(cfg, data, samples, batch, dry_run, count)
    body = _deep_merge(body, _common_overrides(cfg))
    path = write_shrunk_config(osp.abspath(config),
                               osp.join(work, 'scaling.py'), body)
    return dict(config=path, batch=batch, stage=stage)


def read_rows(work_dir: str) -> List[dict]:
    """The training rows of the newest ``*/vis_data/scalars.json`` under
    ``work_dir`` (one JSON object a line; validation rows have no
    ``iter``)."""
    found = sorted(
        osp.join(work_dir, d, 'vis_data', 'scalars.json')
        for d in (os.listdir(work_dir) if osp.isdir(work_dir) else [])
        if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    if not found:
        raise FileNotFoundError(f'no */vis_data/scalars.json under '
                                f'{work_dir!r}: did tools/train.py log?')
    rows = []
    with open(found[-1], encoding='utf-8') as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if 'iter' in row and 'time' in row:
                    rows.append(row)
    return rows


def throughput(rows: Sequence[dict], batch: int, warmup: int
               ) -> Dict[str, Any]:
    """img/s per GPU from logged iteration times (per-GPU ``batch``)."""
    times = [float(r['time']) for r in rows]
    steady = times[warmup:]
    if not steady:
        raise ValueError(f'{len(times)} iterations logged, all within the '
                         f'{warmup} warm-up iterations: raise iters')
    step = statistics.median(steady)
    memory = [r['memory'] for r in rows if 'memory' in r]
    return dict(iterations_timed=len(steady), step_s=round(step, 4),
                img_s_per_gpu=round(batch / step, 2),
                memory_mib=max(memory) if memory else None)


def measure(config: str, counts: Sequence[int], out_dir: str,
            nodes: Sequence[int] = (1, ), iters: int = 20, warmup: int = 5,
            dry_run: bool = False, train_args: Sequence[str] = (),
            timeout: float = 600, command: str = '') -> Dict[str, Any]:
    """Train ``config`` on every GPU count (x simulated node count that
    divides it) and return the results (see module); ``command`` is
    recorded with them."""
    import torch
    if iters <= warmup:
        raise ValueError(f'iters={iters} must exceed warmup={warmup}')
    device = ('cpu (gloo)' if dry_run or not torch.cuda.is_available() else
              torch.cuda.get_device_name(0))
    result: Dict[str, Any] = dict(
        date=datetime.datetime.now().isoformat(timespec='seconds'),
        torch=torch.__version__, device=device, config=config,
        command=command,
        iters=iters, warmup=warmup, dry_run=dry_run,
        train_args=list(train_args), runs=[])
    for gpus in counts:
        for n in nodes:
            if gpus % n:
                continue
            name = f'{gpus}gpu_{n}node'
            work = osp.join(out_dir, name)
            spec = prepare_config(config, work, gpus, iters, dry_run,
                                  data_gpus=max(counts))
            launched = launch_train(
                spec['config'], gpus // n, osp.join(work, 'train'),
                osp.join(work, 'logs'), nodes=n, args=list(train_args),
                timeout=timeout, cpu=dry_run)
            run: Dict[str, Any] = dict(
                gpus=gpus, nodes=n, batch_per_gpu=spec['batch'],
                stage=spec['stage'], returncodes=launched.returncodes,
                seconds=launched.seconds, commands=launched.commands)
            if launched.ok:
                run.update(throughput(read_rows(launched.work_dirs[0]),
                                      spec['batch'], warmup))
                run['img_s_total'] = round(run['img_s_per_gpu'] * gpus, 1)
            else:
                run['tails'] = launched.tails
            result['runs'].append(run)
    add_scaling(result['runs'])
    return result


def add_scaling(runs: List[Dict[str, Any]]) -> None:
    """``scaling``: img/s per GPU over that of the smallest GPU count."""
    done = [r for r in runs if r.get('img_s_per_gpu')]
    if not done:
        return
    base = min(done, key=lambda r: (r['gpus'], r['nodes']))
    for run in done:
        run['scaling'] = round(run['img_s_per_gpu'] / base['img_s_per_gpu'],
                               3)
        run['scaling_base_gpus'] = base['gpus']


def to_markdown(result: Dict[str, Any]) -> str:
    """A table in the style of ``docs/benchmarks/*.md``."""
    lines = [f"# Scaling: {osp.basename(result['config'])}, "
             f"{result['device']}, torch {result['torch']}, "
             f"{result['date']}", '',
             f"Command: `{result['command']}`", '',
             f"{result['iters']} iterations per run, the first "
             f"{result['warmup']} not timed; img/s per GPU = per-GPU batch / "
             'median iteration time from tools/train.py\'s log'
             + (' (dry run: shrunk models on the CPU)'
                if result['dry_run'] else '') + '.', '',
             '| GPUs | nodes | batch/GPU | step s | img/s per GPU | '
             'img/s total | scaling | memory MiB |',
             '|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in result['runs']:
        if 'img_s_per_gpu' not in r:
            lines.append(f"| {r['gpus']} | {r['nodes']} | "
                         f"{r['batch_per_gpu']} | failed (exit "
                         f"{r['returncodes']}) | | | | |")
            continue
        scaling = f"{100 * r['scaling']:.1f}% of {r['scaling_base_gpus']}"
        lines.append(
            f"| {r['gpus']} | {r['nodes']} | {r['batch_per_gpu']} | "
            f"{r['step_s']} | {r['img_s_per_gpu']} | {r['img_s_total']} | "
            f"{scaling} | {r['memory_mib'] or '-'} |")
    return '\n'.join(lines) + '\n'


def write_results(result: Dict[str, Any], out_dir: str,
                  name: str = 'scaling') -> Tuple[str, str]:
    """``out_dir/name.json`` and ``out_dir/name.md``; returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = (osp.join(out_dir, f'{name}.json'),
             osp.join(out_dir, f'{name}.md'))
    with open(paths[0], 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=1)
    with open(paths[1], 'w', encoding='utf-8') as f:
        f.write(to_markdown(result))
    return paths
