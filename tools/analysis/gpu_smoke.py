"""Full-size smoke run of the main recipes on GPUs, through the real tools.

    source tools/analysis/gpu_setup.sh && \
        python tools/analysis/gpu_smoke.py --gpus 1 2 --out-dir "$OUT"

For each GPU count: the full stage-1 DecQ config
(``configs/decq/decq_q8-l0369_...``) and the full stage-2 DiT-DH-XL DecQ
config (``configs/ldm/ldm_dit-dh-xl_decq-q8-l0369-..._80e``) at their shipped
sizes and per-GPU batch (64 and 128), random weights (nothing can be
downloaded) and synthetic data of ImageNet layout (JPEGs, latent shards):

1. ``tools/train.py`` for one epoch of ``--iters`` iterations (checkpoint,
   EMA swap), then ``--resume`` for a second one, with a validation pass on
   a few images / samples (stage 1: discriminator on from epoch 0, GAN term
   from epoch 1, so both phases run);
2. ``tools/test.py`` on the last checkpoint;
3. stage 2: ``tools/sample.py`` for 64 images with classifier-free guidance.

What changes from the shipped configs (data and offline weights only) is
written in each run's ``*_smoke.py`` config. img/s and memory are read from
``tools/train.py``'s own log; results go to ``OUT/gpu_smoke.json``/``.md``.
``--dry-run`` shrinks the models (``decq_plugin/testing/shrink.py``) to
check the script on a CPU.
"""
import argparse
import datetime
import importlib.util
import json
import os
import os.path as osp
import re
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional
from decq_plugin.utils.cli import doc_summary  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

STAGE1 = 'configs/decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py'
STAGE2 = ('configs/ldm/ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_'
          '8xb128-80e_in1k-256.py')
EXTRACTOR = dict(type='RandomConvFeatureExtractor', feature_dim=64,
                 num_classes=1000, input_size=64)


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(
        f'decq_analysis_{name}', osp.join(ROOT, 'tools', 'analysis',
                                          f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    # Registered, so that multiprocessing workers can unpickle its functions.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _sibling('benchmark_gpu')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_tool(tool: str, args: List[str], gpus: int, log: str,
             timeout: int) -> Dict:
    """``tools/<tool>.py`` on ``gpus`` processes (torchrun when > 1)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep +
               os.environ.get('PYTHONPATH', ''))
    if gpus > 1:
        cmd = [sys.executable, '-m', 'torch.distributed.run',
               f'--nproc_per_node={gpus}', f'--master_port={_free_port()}',
               osp.join(ROOT, 'tools', f'{tool}.py'), *args, '--launcher',
               'pytorch']
    else:
        cmd = [sys.executable, osp.join(ROOT, 'tools', f'{tool}.py'), *args]
    start = time.time()
    with open(log, 'w') as f:
        f.write(' '.join(cmd) + '\n')
        f.flush()
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                              timeout=timeout, cwd=ROOT)
    with open(log, encoding='utf-8', errors='replace') as f:
        text = f.read()
    out = dict(command=' '.join(cmd[1:]), returncode=proc.returncode,
               seconds=round(time.time() - start, 1))
    if proc.returncode != 0:
        out['tail'] = text[-3000:]
    return out


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


def stage1_config(work: str, iters: int, gpus: int, dry_run: bool) -> Dict:
    from decq_plugin.testing import shrink
    from decq_plugin.utils.launch import load_config
    cfg = load_config(osp.join(ROOT, STAGE1))
    batch = 2 if dry_run else cfg.train_dataloader.batch_size
    size = shrink.image_size(cfg.model.tokenizer) if dry_run else 256
    data = osp.join(work, 'imagenet')
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
        default_hooks=dict(logger=dict(interval=max(1, iters // 2))),
        train_cfg=dict(max_epochs=2, val_interval=1))
    path = _write(osp.join(work, 'stage1_smoke.py'), STAGE1, body, dry_run,
                  tiny)
    return dict(config=path, batch=batch)


def stage2_config(work: str, iters: int, gpus: int, dry_run: bool) -> Dict:
    import torch

    from decq_plugin.testing import make_reference_npz, shrink
    from decq_plugin.utils.launch import load_config
    cfg = load_config(osp.join(ROOT, STAGE2))
    batch = 2 if dry_run else cfg.train_dataloader.batch_size
    stats = osp.join(work, 'stats.pt')
    reference = osp.join(work, 'reference.npz')
    latents = osp.join(work, 'latents')
    artefacts = dict(tokenizer_ckpt=None, latent_stats=stats,
                     latent_root=latents, reference=reference)
    tiny = shrink.stage2_overrides(cfg, artefacts) if dry_run else {}
    probe = _write(osp.join(work, 'probe.py'), STAGE2,
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
        default_hooks=dict(logger=dict(interval=max(1, iters // 2))),
        train_cfg=dict(max_epochs=2, val_interval=2))
    if dry_run:
        body['train_dataloader']['num_workers'] = 1
        for name in ('val_evaluator', 'test_evaluator'):
            body[name]['feature_extractor'] = dict(shrink.FEATURE_EXTRACTOR)
    path = _write(osp.join(work, 'stage2_smoke.py'), STAGE2, body, dry_run,
                  tiny)
    return dict(config=path, batch=batch, reference=reference)


def _last_checkpoint(work_dir: str) -> Optional[str]:
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return f.read().strip() or None


def smoke_stage(stage: int, gpus: int, out_dir: str, iters: int,
                dry_run: bool, timeout: int) -> Dict:
    work = osp.join(out_dir, f'stage{stage}_{gpus}gpu')
    os.makedirs(work, exist_ok=True)
    make = stage1_config if stage == 1 else stage2_config
    spec = make(osp.join(out_dir, f'data{stage}_{gpus}gpu'), iters, gpus,
                dry_run)
    cfg, batch = spec['config'], spec['batch']
    train_dir = osp.join(work, 'train')
    result: Dict = dict(stage=stage, gpus=gpus, batch_per_gpu=batch,
                        config=osp.relpath(cfg, out_dir))
    first = run_tool('train', [cfg, '--work-dir', train_dir, '--cfg-options',
                               'train_cfg.max_epochs=1'], gpus,
                     osp.join(work, 'train1.log'), timeout)
    result['train_epoch1'] = first
    if first['returncode'] != 0:
        return result
    resumed = run_tool('train', [cfg, '--work-dir', train_dir, '--resume'],
                       gpus, osp.join(work, 'train2.log'), timeout)
    result['train_epoch2_resumed'] = resumed
    logs = ''
    for name in ('train1.log', 'train2.log'):
        with open(osp.join(work, name), errors='replace') as f:
            logs += f.read()
    result['resumed'] = 'resumed epoch: 1' in logs
    result['log'] = bench.parse_train_log(logs, batch * gpus)
    checkpoint = _last_checkpoint(train_dir)
    result['checkpoint'] = checkpoint and osp.basename(checkpoint)
    if resumed['returncode'] != 0 or checkpoint is None:
        return result
    result['test'] = run_tool(
        'test', [cfg, checkpoint, '--work-dir', osp.join(work, 'test'),
                 '--out', osp.join(work, 'test_metrics.json')], gpus,
        osp.join(work, 'test.log'), timeout)
    metrics = osp.join(work, 'test_metrics.json')
    if osp.isfile(metrics):
        with open(metrics) as f:
            result['test_metrics'] = json.load(f)
    if stage == 2:
        classes, per_class = (4, 1) if dry_run else (64, 1)
        n = classes * per_class
        sample = run_tool(
            'sample', [cfg, checkpoint, '--out-dir',
                       osp.join(work, 'samples'), '--classes',
                       *map(str, range(classes)), '--num-per-class',
                       str(per_class),
                       '--batch-size', str(min(n, 64)), '--guidance-scale',
                       '1.5', '--no-png'] +
            (['--device', 'cpu'] if dry_run else []), gpus,
            osp.join(work, 'sample.log'), timeout)
        with open(osp.join(work, 'sample.log'), errors='replace') as f:
            text = f.read()
        found = re.search(r'(\d+) made by rank 0 in ([\d.]+)s', text)
        if found:
            sample['img_s_rank0'] = round(
                int(found.group(1)) / float(found.group(2)), 2)
        result['sample_64_cfg'] = sample
    return result


def to_markdown(results: Dict) -> str:
    lines = [f"# GPU smoke run ({results['date']}, {results['gpu']}, torch "
             f"{results['torch']})", '',
             '| stage | GPUs | batch/GPU | epoch 1 | resume + epoch 2 | '
             'img/s (log) | memory MiB | test | sample 64 (CFG) |',
             '|---|---:|---:|---|---|---:|---:|---|---|']
    for r in results['runs']:
        def ok(part):
            p = r.get(part)
            return '-' if p is None else (
                'ok' if p['returncode'] == 0 else 'FAILED')
        log = r.get('log', {})
        sample = r.get('sample_64_cfg')
        sample_text = '-' if sample is None else (
            f"{ok('sample_64_cfg')}, {sample.get('img_s_rank0', '?')} img/s"
            ' (rank 0)')
        lines.append(
            f"| {r['stage']} | {r['gpus']} | {r['batch_per_gpu']} | "
            f"{ok('train_epoch1')} | {ok('train_epoch2_resumed')} | "
            f"{log.get('img_s', '-')} | {log.get('memory_mib', '-')} | "
            f"{ok('test')} | {sample_text} |")
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument('--out-dir', default=os.environ.get('OUT') or
                        'work_dirs/gpu_smoke')
    parser.add_argument('--gpus', type=int, nargs='+', default=[1])
    parser.add_argument('--stages', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--iters', type=int, default=10,
                        help='iterations per epoch (per GPU count)')
    parser.add_argument('--timeout', type=int, default=400)
    parser.add_argument('--dry-run', action='store_true')
    args = parser.parse_args(argv)
    import torch
    os.makedirs(args.out_dir, exist_ok=True)
    results = dict(
        date=datetime.date.today().isoformat(), torch=torch.__version__,
        gpu=(torch.cuda.get_device_name(0) if torch.cuda.is_available()
             else 'cpu'), command=' '.join(sys.argv), runs=[])
    for gpus in args.gpus:
        for stage in args.stages:
            results['runs'].append(smoke_stage(
                stage, gpus, args.out_dir, args.iters, args.dry_run,
                args.timeout))
            with open(osp.join(args.out_dir, 'gpu_smoke.json'), 'w') as f:
                json.dump(results, f, indent=1)
    with open(osp.join(args.out_dir, 'gpu_smoke.md'), 'w') as f:
        f.write(to_markdown(results))
    print(to_markdown(results))
    return results


if __name__ == '__main__':
    main()
