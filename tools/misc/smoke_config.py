"""Run a shipped config end to end on the CPU, shrunk in size only.

    python tools/misc/smoke_config.py CONFIG [--work-dir DIR] [--keep]
    python tools/misc/smoke_config.py configs/benchmark/SUITE.json

Checks in a minute that a recipe (or your own config inheriting one) runs
as users run it, before it is launched on a cluster: the config's own loops,
hooks, evaluators, dataloaders, optimizer wrappers, EMA and checkpointing,
through the project's tools:

* stage 1: ``tools/train.py`` for all but the last epoch (with validation),
  ``tools/train.py --resume`` for the last one, then ``tools/test.py`` on the
  last checkpoint;
* stage 2: the shrunk tokenizer's checkpoint, ``tools/compute_latent_stats.py``
  and ``tools/extract_latents.py`` on synthetic ImageNet-layout images, then
  the same train / resume / test runs and ``tools/sample.py`` with metrics;
* a benchmark suite (``.json``): ``tools/benchmark_tokenizers.py`` on its
  tokenizers, shrunk, with checkpoints written from them.

What is shrunk (and nothing else) is listed in
``decq_plugin/testing/shrink.py``. Prints a JSON summary (paths, metrics,
wall times) and exits non-zero on the first failure.
"""
import argparse
import hashlib
import importlib.util
import json
import os
import os.path as osp
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional

TOOLS = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(TOOLS))

import torch  # noqa: E402

from decq_plugin.testing import (make_imagenet_folder,  # noqa: E402
                                 make_reference_npz, recipe_kind,
                                 save_module_checkpoint, shrink_overrides,
                                 write_shrunk_config)
from decq_plugin.testing import shrink  # noqa: E402
from decq_plugin.utils.cli import doc_summary  # noqa: E402
from decq_plugin.utils.launch import load_config  # noqa: E402

_TOOL_CACHE: Dict[str, object] = {}


def load_tool(name: str):
    """The module of ``tools/<name>.py`` (imported once)."""
    if name not in _TOOL_CACHE:
        spec = importlib.util.spec_from_file_location(
            f'decq_tool_{name.replace("/", "_")}',
            osp.join(TOOLS, f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _TOOL_CACHE[name] = module
    return _TOOL_CACHE[name]


def _digest(value) -> str:
    return hashlib.sha1(repr(value).encode()).hexdigest()[:12]


def _to_plain(value):
    """ConfigDicts -> dicts (for writing a config file)."""
    if hasattr(value, 'to_dict'):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_plain(v) for v in value)
    return value


# -- stage-2 artefacts ---------------------------------------------------------
def _tokenizer_config(tokenizer: dict, data_root: str, path: str) -> str:
    """A stage-1 config around ``tokenizer`` (losses off) whose train split
    is the synthetic image folder: what the latent tools read."""
    size = shrink.image_size(tokenizer)
    tokenizer = dict(_to_plain(tokenizer), latent_stats=None)
    text = (
        "default_scope = 'decq_plugin'\n"
        f'model = {dict(type="AutoencoderModel", tokenizer=tokenizer, perceptual_loss=None, discriminator=None, diffaug=None)!r}\n'  # noqa: E501
        'train_dataloader = ' + repr(dict(
            batch_size=shrink.BATCH_SIZE, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            dataset=dict(type='ImageNetDataset', data_root=data_root,
                         split='train',
                         transform=dict(type='AdmCenterCrop', size=size))))
        + '\n')
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)
    return path


def stage2_artefacts(config: str, cache_dir: str, data_root: str) -> Dict:
    """Tokenizer checkpoint, statistics, cached latents, reference batch
    (and guide / RAE-decoder checkpoints) for a stage-2 ``config``; reused
    across configs that share the shrunk tokenizer."""
    from decq_plugin.apis import build_tokenizer_from_config
    from decq_plugin.models.diffusion.generation_model import \
        denoiser_defaults
    from decq_plugin.registry import MODELS
    cfg = load_config(config)
    placeholder = dict(tokenizer_ckpt=None, latent_stats=None,
                       latent_root='none', reference='none',
                       guide_ckpt=None, rae_tokenizer_ckpt=None)
    probe = write_shrunk_config(
        config, osp.join(cache_dir, f'probe_{_digest(config)}.py'),
        shrink.stage2_overrides(cfg, placeholder))
    shrunk = load_config(probe)
    tok_cfg = dict(_to_plain(shrunk.model.tokenizer), latent_stats=None)
    key = _digest(sorted(tok_cfg.items()))
    folder = osp.join(cache_dir, f'tokenizer_{key}')
    os.makedirs(folder, exist_ok=True)
    out = dict(tokenizer_ckpt=osp.join(folder, 'tokenizer.pth'),
               latent_stats=osp.join(folder, 'stats.pt'),
               latent_root=osp.join(folder, 'latents'),
               reference=osp.join(cache_dir, 'reference.npz'))
    tok_file = _tokenizer_config(tok_cfg, data_root,
                                 osp.join(folder, 'tokenizer_cfg.py'))
    torch.manual_seed(0)
    tokenizer = build_tokenizer_from_config(tok_file)
    if not osp.isfile(out['tokenizer_ckpt']):
        save_module_checkpoint(tokenizer, out['tokenizer_ckpt'], 'tokenizer')
    if not osp.isfile(out['latent_stats']):
        load_tool('compute_latent_stats').main([
            tok_file, out['tokenizer_ckpt'], '--out', out['latent_stats'],
            '--batch-size', str(shrink.BATCH_SIZE), '--device', 'cpu'])
    if not osp.isfile(osp.join(out['latent_root'], 'meta.json')):
        load_tool('extract_latents').main([
            tok_file, out['tokenizer_ckpt'], '--out-dir', out['latent_root'],
            '--stats', out['latent_stats'], '--batch-size',
            str(shrink.BATCH_SIZE), '--num-workers', '0', '--shard-size',
            '4', '--device', 'cpu'])
    if not osp.isfile(out['reference']):
        make_reference_npz(out['reference'], num_images=8,
                           size=shrink.image_size(tok_cfg))
    guidance = shrunk.model.get('guidance')
    if guidance and guidance.get('type') == 'AutoGuidance':
        guide_cfg = dict(_to_plain(guidance.guide))
        guide_cfg.update(denoiser_defaults(tokenizer.latent_shapes,
                                           shrink.NUM_CLASSES))
        path = osp.join(folder, f'guide_{_digest(sorted(guide_cfg.items()))}'
                        '.pth')
        if not osp.isfile(path):
            torch.manual_seed(1)
            save_module_checkpoint(MODELS.build(guide_cfg), path,
                                   guidance.get('guide_prefix', 'denoiser'))
        out['guide_ckpt'] = path
    decode_with = shrunk.model.get('decode_with')
    if decode_with:
        rae_cfg = dict(_to_plain(decode_with.tokenizer))
        path = osp.join(cache_dir,
                        f'rae_{_digest(sorted(rae_cfg.items()))}.pth')
        if not osp.isfile(path):
            torch.manual_seed(2)
            save_module_checkpoint(MODELS.build(rae_cfg), path,
                                   decode_with.get('prefix', 'tokenizer'))
        out['rae_tokenizer_ckpt'] = path
    return out


# -- the runs ------------------------------------------------------------------
def last_checkpoint(work_dir: str) -> str:
    """The checkpoint named by ``work_dir/last_checkpoint``."""
    with open(osp.join(work_dir, 'last_checkpoint'), encoding='utf-8') as f:
        path = f.read().strip()
    if not osp.isfile(path):
        raise FileNotFoundError(f'last_checkpoint of {work_dir} names '
                                f'{path!r}, which does not exist')
    return path


def _epochs(overrides: dict) -> Optional[int]:
    return overrides.get('train_cfg', {}).get('max_epochs')


def smoke_config(config: str, work_dir: str,
                 shared_dir: Optional[str] = None,
                 sample: bool = True, resume: bool = True) -> Dict:
    """Train (with validation), resume, test and (stage 2) sample a shrunk
    ``config``; returns a summary dict.

    Args:
        config: the shipped (or a user's) config file.
        work_dir: every output of the run goes below it.
        shared_dir: where synthetic data and stage-2 artefacts are kept
            between configs (default: ``work_dir/shared``).
        sample: run ``tools/sample.py`` for stage-2 configs.
        resume: train all but the last epoch, then ``--resume`` for the
            last one (else: one run for every epoch).
    """
    shared_dir = shared_dir or osp.join(work_dir, 'shared')
    os.makedirs(work_dir, exist_ok=True)
    cfg = load_config(config)
    kind = recipe_kind(cfg)
    data_root = make_imagenet_folder(osp.join(shared_dir, 'imagenet'),
                                     num_classes=shrink.NUM_CLASSES)
    if kind == 'stage1':
        data = dict(data_root=data_root)
    else:
        data = stage2_artefacts(config, shared_dir, data_root)
    overrides = shrink_overrides(cfg, data)
    name = osp.splitext(osp.basename(config))[0]
    shrunk = write_shrunk_config(config, osp.join(work_dir, f'{name}.py'),
                                 overrides)
    summary: Dict = dict(config=config, kind=kind, shrunk_config=shrunk)
    train = load_tool('train')
    train_dir = osp.join(work_dir, 'train')
    epochs = _epochs(overrides)
    start = time.perf_counter()
    if resume and epochs and epochs > 1:
        # All but the last epoch, then resume for the last one.
        train.main([shrunk, '--work-dir', train_dir, '--cfg-options',
                    f'train_cfg.max_epochs={epochs - 1}'])
        summary['first_checkpoint'] = last_checkpoint(train_dir)
        train.main([shrunk, '--work-dir', train_dir, '--resume'])
    else:
        train.main([shrunk, '--work-dir', train_dir])
    summary['train_s'] = round(time.perf_counter() - start, 2)
    checkpoint = last_checkpoint(train_dir)
    summary['checkpoint'] = checkpoint
    metrics_file = osp.join(work_dir, 'test_metrics.json')
    start = time.perf_counter()
    load_tool('test').main([shrunk, checkpoint, '--work-dir',
                            osp.join(work_dir, 'test'), '--out',
                            metrics_file])
    summary['test_s'] = round(time.perf_counter() - start, 2)
    with open(metrics_file, encoding='utf-8') as f:
        summary['test_metrics'] = json.load(f)
    if kind == 'stage2' and sample:
        start = time.perf_counter()
        result = load_tool('sample').main([
            shrunk, checkpoint, '--out-dir', osp.join(work_dir, 'samples'),
            '--num-per-class', '3', '--batch-size', '4', '--device', 'cpu',
            '--no-png', '--metrics', '--reference', data['reference'],
            '--feature-extractor', 'RandomConvFeatureExtractor'])
        summary['sample_s'] = round(time.perf_counter() - start, 2)
        summary['sample_metrics'] = result.get('metrics')
        summary['npz'] = result.get('npz')
    return summary


def smoke_suite(suite_file: str, work_dir: str,
                shared_dir: Optional[str] = None) -> Dict:
    """Run ``tools/benchmark_tokenizers.py`` on a benchmark suite whose
    tokenizers are shrunk as above, with checkpoints written from them, on
    the synthetic ImageNet-layout images; returns the tool's result."""
    from decq_plugin.apis import build_tokenizer_from_config
    from decq_plugin.benchmark.runner import load_entry_config
    from decq_plugin.benchmark.suite import load_suite, resolve_config
    shared_dir = shared_dir or osp.join(work_dir, 'shared')
    data_root = make_imagenet_folder(osp.join(shared_dir, 'imagenet'),
                                     num_classes=shrink.NUM_CLASSES)
    suite = load_suite(suite_file)
    with open(suite.path, encoding='utf-8') as f:
        raw = json.load(f)
    root = osp.dirname(TOOLS)
    entries = []
    for entry, raw_entry in zip(suite.tokenizers, raw['tokenizers']):
        config = osp.abspath(resolve_config(entry, root))
        cfg = load_entry_config(config, entry.cfg_options)
        options = {'model.tokenizer': shrink.tokenizer_overrides(
            cfg.model.tokenizer)}
        options.update(entry.cfg_options)
        name = _digest((config, sorted(options.items(), key=str)))
        checkpoint = osp.join(shared_dir, 'suite_ckpts', f'{name}.pth')
        if not osp.isfile(checkpoint):
            torch.manual_seed(0)
            save_module_checkpoint(
                build_tokenizer_from_config(config, cfg_options=options),
                checkpoint,
                'tokenizer')
        entries.append(dict(raw_entry, config=config, cfg_options=options,
                            checkpoint=checkpoint))
    size = shrink.image_size(load_entry_config(
        entries[0]['config'], entries[0]['cfg_options']).model.tokenizer)
    raw.update(
        tokenizers=entries, batch_size=shrink.BATCH_SIZE, num_workers=0,
        num_images=None,
        dataset=dict(type='ImageNetDataset', data_root=data_root,
                     split='val',
                     transform=dict(type='AdmCenterCrop', size=size)),
        rfid=dict(feature_extractor=dict(shrink.FEATURE_EXTRACTOR)),
        lpips=dict(raw.get('lpips', {}), pretrained_trunk=False),
        throughput=dict(batch_size=shrink.BATCH_SIZE, warmup=0, repeats=1))
    os.makedirs(work_dir, exist_ok=True)
    shrunk = osp.join(work_dir, osp.basename(suite.path))
    with open(shrunk, 'w', encoding='utf-8') as f:
        json.dump(raw, f, indent=1)
    return load_tool('benchmark_tokenizers').main([
        '--suite', shrunk, '--out-dir', osp.join(work_dir, 'report'),
        '--device', 'cpu', '--no-progress'])


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=doc_summary(__doc__))
    parser.add_argument('config')
    parser.add_argument('--work-dir', default=None,
                        help='output folder (default: a temporary one, '
                        'removed at the end unless --keep)')
    parser.add_argument('--keep', action='store_true',
                        help='keep the temporary work dir')
    parser.add_argument('--no-sample', action='store_true',
                        help='skip tools/sample.py (stage 2)')
    parser.add_argument('--no-resume', action='store_true',
                        help='train every epoch in one run (no --resume)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict:
    args = parse_args(argv)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    # Near-zero (EMA of zero-initialised) weights make denormal floats,
    # which are many times slower on CPUs.
    torch.set_flush_denormal(True)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix='decq_smoke_')
    try:
        if args.config.endswith('.json'):
            result = smoke_suite(args.config, work_dir)
            summary = dict(config=args.config, kind='benchmark_suite',
                           paths=result['paths'],
                           tokenizers=len(result['results']))
        else:
            summary = smoke_config(args.config, work_dir,
                                   sample=not args.no_sample,
                                   resume=not args.no_resume)
    finally:
        if args.work_dir is None and not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    print(json.dumps(summary, indent=2, default=str))
    return summary


if __name__ == '__main__':
    main()
