"""Cache a trained tokenizer's latents of a dataset, for stage-2 training.

    python tools/extract_latents.py CONFIG CHECKPOINT --out-dir DIR \
        [--stats STATS.pt] [--split train] [--batch-size 64] \
        [--shard-size 1024] [--max-images N] [--no-flip] [--dtype float16]
    torchrun --nproc_per_node 8 tools/extract_latents.py ... --launcher pytorch

What is cached (RAE's recipe): the ADM centre crop of every image of the
config's ``{split}_dataloader`` dataset at the tokenizer's image size
(``AdmCenterCrop``, replacing the dataset's own, random, training
transform; ``--transform-from-config`` keeps it), its class label
(``data_samples['gt_label']``) and, unless ``--no-flip``, the latents of the
horizontally flipped crop. Stage 2 then trains on ``CachedLatentDataset(DIR,
use_flip=True)``, which picks the plain or the flipped latents at random.

Normalisation: with a statistics file (``--stats``, by default the config's
``model.tokenizer.latent_stats``) the latents written are *normalised*
(``meta.json``: ``"normalised": true``); ``--stats none`` writes raw
latents (``"normalised": false``).

Order and resuming: images are read in dataset order (no shuffling) and
written in shards of ``--shard-size``; rerunning the same command skips the
shards already on disk. A run with ``--max-images k`` is a complete,
readable folder of the first ``k`` images; rerunning with a larger (or no)
limit extends it (only its partial last shard is rewritten).

Several GPUs: rank ``r`` of ``W`` encodes images ``r, r + W, ...`` into
``DIR/rank_{r}`` (a resumable folder of its own); at the end rank 0 writes
``DIR/meta.json`` listing every rank's shards, so ``CachedLatentDataset(DIR)``
reads all of them (rank 0's images first, then rank 1's ...). Resume with
the same number of processes.
"""
import argparse
import inspect
import json
import os
import os.path as osp
import sys
import warnings
from typing import List, Optional

import torch
from mmengine.config import DictAction
from mmengine.dataset import default_collate
from mmengine.dist import barrier, get_dist_info
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from decq_plugin.apis import build_tokenizer_from_config  # noqa: E402
from decq_plugin.utils.preflight import preflight_or_exit  # noqa: E402
from decq_plugin.datasets.latent_dataset import (  # noqa: E402
    META_FILE, LatentShardWriter, read_meta_file, verify_folder)
from decq_plugin.datasets.sample_seed import (  # noqa: E402
    SeededIndex, mix_seed, seed_everything_for)
from decq_plugin.registry import DATASETS  # noqa: E402
from decq_plugin.utils.launch import (check_file, init_launcher,  # noqa: E402
                                      load_config)
from decq_plugin.utils.cli import doc_summary  # noqa: E402

DTYPES = ('float16', 'bfloat16', 'float32')
CONFIG_TRANSFORM = 'config'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument('config', nargs='?',
                        help='stage-1 or stage-2 config')
    parser.add_argument('checkpoint', nargs='?', help="tokenizer checkpoint "
                        "(stage-1 AutoencoderModel or stage-2 model); 'none' "
                        'keeps the weights the config builds')
    parser.add_argument('--out-dir', help='latent folder')
    parser.add_argument('--verify', metavar='DIR',
                        help='only check the latent folder DIR: every shard '
                        'against the SHA-256 in its meta.json; exit code 1 '
                        'when one is damaged or missing')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the per-sample randomness of a random '
                        'transform (--transform-from-config)')
    parser.add_argument('--stats', default=None,
                        help="latent statistics file (default: the config's "
                        "model.tokenizer.latent_stats); 'none' writes raw "
                        'latents')
    parser.add_argument('--split', choices=['train', 'val'], default='train',
                        help='which dataloader of the config to read')
    parser.add_argument('--batch-size', type=int, default=None,
                        help="default: the dataloader's")
    parser.add_argument('--num-workers', type=int, default=None,
                        help="default: the dataloader's")
    parser.add_argument('--shard-size', type=int, default=1024)
    parser.add_argument('--max-images', type=int, default=None,
                        help='encode only the first N images of the dataset')
    parser.add_argument('--no-flip', action='store_true',
                        help='do not store latents of flipped images')
    parser.add_argument('--dtype', choices=DTYPES, default='float16',
                        help='storage dtype')
    parser.add_argument('--file-format', choices=['safetensors', 'pt'],
                        default='safetensors')
    parser.add_argument('--transform-from-config', action='store_true',
                        help="keep the dataset's transform instead of the "
                        'ADM centre crop')
    parser.add_argument('--device', default=None)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'],
                        default='none')
    args = parser.parse_args(argv)
    if args.verify is None and not (args.config and args.checkpoint
                                    and args.out_dir):
        parser.error('CONFIG, CHECKPOINT and --out-dir are required '
                     '(or --verify DIR alone)')
    for name in ('batch_size', 'shard_size', 'max_images'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    if args.num_workers is not None and args.num_workers < 0:
        parser.error('--num-workers must be >= 0')
    return args


# -- config -> tokenizer and dataset ------------------------------------------
def tokenizer_config(cfg) -> dict:
    """The tokenizer part of ``cfg.model`` (nested or the model itself)."""
    return cfg.model.tokenizer if 'tokenizer' in cfg.model else cfg.model


def set_center_crop(dataset_cfg: dict, size: int) -> List[str]:
    """Give every dataset in ``dataset_cfg`` (wrappers' inner ones too) the
    transform ``AdmCenterCrop(size)``, in place. Returns the types of the
    datasets that take no ``transform`` argument (left as they are)."""
    if 'datasets' in dataset_cfg:  # ConcatDataset
        return [name for inner in dataset_cfg['datasets']
                for name in set_center_crop(inner, size)]
    if 'dataset' in dataset_cfg:  # RepeatDataset, ClassBalancedDataset
        return set_center_crop(dataset_cfg['dataset'], size)
    dataset_type = dataset_cfg.get('type')
    cls = DATASETS.get(dataset_type) if isinstance(dataset_type,
                                                   str) else dataset_type
    if cls is None:
        raise KeyError(f'dataset type {dataset_type!r} is not registered')
    if 'transform' not in inspect.signature(cls.__init__).parameters:
        return [getattr(cls, '__name__', str(dataset_type))]
    dataset_cfg['transform'] = dict(type='AdmCenterCrop', size=size)
    return []


def build_dataset(cfg, split: str, image_size: int,
                  keep_transform: bool) -> Dataset:
    """The dataset of ``cfg.{split}_dataloader``, with the ADM centre crop
    at ``image_size`` unless ``keep_transform``."""
    key = f'{split}_dataloader'
    if cfg.get(key) is None or 'dataset' not in cfg[key]:
        raise KeyError(f'the config has no {key}.dataset to encode')
    dataset_cfg = cfg[key]['dataset'].to_dict() if hasattr(
        cfg[key]['dataset'], 'to_dict') else dict(cfg[key]['dataset'])
    if not keep_transform:
        untouched = set_center_crop(dataset_cfg, image_size)
        if untouched:
            warnings.warn(
                f'{untouched} take no transform argument: their own items '
                'are cached (random ones make resumed runs differ)')
    return DATASETS.build(dataset_cfg)


def resolve_stats(stats_arg: Optional[str], tok_cfg: dict) -> Optional[str]:
    """``--stats``: a path, ``'none'``, or unset (the config's file)."""
    if stats_arg is None:
        return tok_cfg.get('latent_stats')
    return None if stats_arg.lower() == 'none' else stats_arg


# -- resuming -----------------------------------------------------------------
def write_json(path: str, obj: dict) -> None:
    """Write ``obj`` to ``path`` atomically (temporary file, rename)."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def read_meta(folder: str) -> Optional[dict]:
    path = osp.join(folder, META_FILE)
    if not osp.isfile(path):
        return None
    return read_meta_file(path)


class SeededPositions(Dataset):
    """Positions ``positions`` of ``dataset``, each item drawn with its own
    seed ``mix_seed(seed, position)`` (the same whichever run, batch or
    worker reads it)."""

    def __init__(self, dataset: Dataset, positions: List[int],
                 seed: int) -> None:
        self.dataset, self.positions, self.seed = dataset, positions, seed

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        position = self.positions[i]
        index = SeededIndex(position, mix_seed(self.seed, position))
        seed_everything_for(index)  # for transforms on the global RNGs
        return self.dataset[index]


def check_resume_settings(meta: dict, folder: str, settings: dict,
                          has_flip: bool, dtype: str) -> None:
    """Refuse to continue ``folder`` with settings other than its own
    (``settings``: split, transform, files, rank, world size; the writer
    itself checks shard size, tokenizer name and normalisation)."""
    if meta.get('merged_from'):
        raise ValueError(
            f'{folder} holds the merged output of {meta.get("world_size")} '
            'processes; resume it with that many, or use another --out-dir')
    wanted = dict(settings, has_flip=has_flip, dtype=dtype)
    for key, value in wanted.items():
        stored = meta.get(key)
        if key in ('has_flip', 'dtype') and stored is None:
            continue  # nothing was added yet
        if stored != value:
            raise ValueError(
                f'{folder} holds latents with {key}={stored!r}, this run has '
                f'{value!r}; use the same settings or another --out-dir')


def reopen_to_extend(folder: str, meta: dict, target: int) -> None:
    """Let a complete folder of ``meta['count'] < target`` samples grow:
    mark it incomplete and drop its partial last shard from the listing
    (the next shard written replaces that file)."""
    shards = meta['shards']
    if shards and shards[-1]['count'] < meta['shard_size']:
        meta['count'] -= shards.pop()['count']
    meta['complete'] = False
    write_json(osp.join(folder, META_FILE), meta)


# -- the work -----------------------------------------------------------------
@torch.no_grad()
def extract_rank(tokenizer: torch.nn.Module, dataset: Dataset, folder: str,
                 *, rank: int = 0, world_size: int = 1,
                 num_images: Optional[int] = None, batch_size: int = 64,
                 num_workers: int = 0, shard_size: int = 1024,
                 dtype: str = 'float16', flip: bool = True,
                 file_format: str = 'safetensors', tokenizer_name: str = '',
                 settings: Optional[dict] = None,
                 device: str = 'cpu', progress: bool = True,
                 seed: int = 0) -> int:
    """Encode dataset positions ``rank, rank + world_size, ...`` (of the
    first ``num_images``) into the latent folder ``folder``, continuing
    what an earlier run left there. Returns the samples encoded now."""
    total = len(dataset) if num_images is None else min(num_images,
                                                        len(dataset))
    positions = list(range(rank, total, world_size))
    if not positions:
        raise ValueError(f'rank {rank} of {world_size} gets no image of '
                         f'{total}; use fewer processes')
    settings = dict(settings or {}, world_size=world_size, rank=rank)
    normalised = bool(tokenizer.normalizer.enabled)
    meta = read_meta(folder)
    if meta is not None:
        check_resume_settings(meta, folder, settings, flip, dtype)
        if meta['count'] > len(positions):
            raise ValueError(
                f'{folder} already holds {meta["count"]} samples, more than '
                f'the {len(positions)} of this run; use another --out-dir')
        if meta['complete'] and meta['count'] == len(positions):
            return 0
        if meta['complete']:
            reopen_to_extend(folder, meta, len(positions))
    writer = LatentShardWriter(folder, shard_size, file_format,
                               tokenizer=tokenizer_name,
                               normalised=normalised, extra_meta=settings)
    todo = positions[writer.num_written:]
    loader = DataLoader(SeededPositions(dataset, todo, seed),
                        batch_size=batch_size,
                        shuffle=False, num_workers=num_workers,
                        collate_fn=default_collate)
    store = getattr(torch, dtype)
    bar = tqdm(total=len(todo), unit='img', disable=not progress,
               desc=f'latents {osp.basename(folder)}')
    for batch in loader:
        images = batch['inputs'].to(device).float()
        n = images.shape[0]
        if flip:
            images = torch.cat([images, images.flip(-1)])
        latents = tokenizer.encode(images)
        latents = {k: v.to(store) for k, v in latents.items()}
        plain = {k: v[:n] for k, v in latents.items()}
        flipped = {k: v[n:] for k, v in latents.items()} if flip else None
        writer.add(plain, batch['data_samples']['gt_label'], flipped)
        bar.update(n)
    bar.close()
    writer.close()
    return len(todo)


def merge_rank_folders(out_dir: str, world_size: int) -> dict:
    """Write ``out_dir/meta.json`` listing the shards of the complete rank
    folders ``out_dir/rank_{r}`` (in rank order); returns that meta."""
    metas = []
    for r in range(world_size):
        folder = osp.join(out_dir, f'rank_{r}')
        meta = read_meta(folder)
        if meta is None or not meta['complete']:
            raise RuntimeError(f'{folder} is not a complete latent folder')
        metas.append(meta)
    first = metas[0]
    common = ('format', 'version', 'tokenizer', 'normalised',
              'latent_shapes', 'num_queries', 'has_flip', 'dtype',
              'shard_size', 'split', 'transform')
    for r, meta in enumerate(metas):
        differ = [k for k in common if meta.get(k) != first.get(k)]
        if differ:
            raise ValueError(f'rank_{r} differs from rank_0 in {differ}')
    merged = {k: first.get(k) for k in common}
    shards, count = [], 0
    for r, meta in enumerate(metas):
        for shard in meta['shards']:
            shards.append(dict(file=f'rank_{r}/{shard["file"]}', start=count,
                               count=shard['count'],
                               sha256=shard.get('sha256')))
            count += shard['count']
    merged.update(count=count, complete=True, shards=shards,
                  world_size=world_size,
                  merged_from=[f'rank_{r}' for r in range(world_size)])
    write_json(osp.join(out_dir, META_FILE), merged)
    return merged


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.verify is not None:
        problems = verify_folder(args.verify)
        for problem in problems:
            print(problem)
        if any('carry no checksum' not in p for p in problems):
            sys.exit(1)
        print(f'{args.verify}: every shard matches its checksum')
        return read_meta(args.verify)
    init_launcher(args.launcher)
    rank, world_size = get_dist_info()
    checkpoint = None if args.checkpoint == 'none' else args.checkpoint
    preflight_or_exit('extract_latents.py', args.config, args.cfg_options, (f'data:{args.split}', 'model_files') + (() if checkpoint else ('vfm', )), {'checkpoint': checkpoint, 'latent statistics file (--stats)': None if str(args.stats).lower() == 'none' else args.stats}, weights_from_checkpoint=bool(checkpoint))  # noqa: E501
    if checkpoint:
        check_file(checkpoint, 'checkpoint')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda' and world_size > 1:
        device = f'cuda:{torch.cuda.current_device()}'

    cfg = load_config(args.config, args.cfg_options)
    tok_cfg = tokenizer_config(cfg)
    stats = resolve_stats(args.stats, tok_cfg)
    if stats:
        check_file(stats, 'latent statistics file')
    if 'latent_stats' in tok_cfg:
        tok_cfg['latent_stats'] = None  # loaded below, after the checkpoint
    encoder = tok_cfg.get('encoder')
    if checkpoint and isinstance(encoder, dict) and encoder.get('pretrained'):
        encoder['pretrained'] = False  # the VFM comes from the checkpoint
    tokenizer = build_tokenizer_from_config(cfg, checkpoint, device=device)
    if stats:
        tokenizer.normalizer.load(stats)
    elif args.stats is not None:  # 'none': raw even if the ckpt has stats
        tokenizer.normalizer.enabled.fill_(False)

    dataset = build_dataset(cfg, args.split, tokenizer.image_size,
                            args.transform_from_config)
    loader_cfg = cfg[f'{args.split}_dataloader']
    single = world_size == 1
    folder = args.out_dir if single else osp.join(args.out_dir,
                                                  f'rank_{rank}')
    top = read_meta(args.out_dir)
    if not single and top is not None and not top.get('merged_from'):
        raise ValueError(f'{args.out_dir} holds a single-process extraction;'
                         ' resume it without --launcher or use another '
                         '--out-dir')
    settings = dict(
        split=args.split,
        transform=(CONFIG_TRANSFORM if args.transform_from_config else
                   f'AdmCenterCrop({tokenizer.image_size})'),
        checkpoint=checkpoint and osp.abspath(checkpoint),
        stats=stats and osp.abspath(stats))
    done_now = extract_rank(
        tokenizer, dataset, folder, rank=rank, world_size=world_size,
        num_images=args.max_images,
        batch_size=args.batch_size or loader_cfg.get('batch_size', 64),
        num_workers=(args.num_workers if args.num_workers is not None else
                     loader_cfg.get('num_workers', 0)),
        shard_size=args.shard_size, dtype=args.dtype,
        flip=not args.no_flip, file_format=args.file_format,
        tokenizer_name=osp.splitext(osp.basename(args.config))[0],
        settings=settings, device=device, progress=rank == 0,
        seed=args.seed)
    barrier()
    meta = merge_rank_folders(args.out_dir, world_size) if (
        rank == 0 and not single) else read_meta(folder)
    if rank == 0:
        kind = 'normalised' if meta['normalised'] else 'raw'
        print(f'{args.out_dir}: {meta["count"]} {kind} latents '
              f'{meta["latent_shapes"]} (+flip: {meta["has_flip"]}, '
              f'{meta["dtype"]}), {done_now} encoded now by rank 0; read '
              f"with dict(type='CachedLatentDataset', "
              f"data_root='{args.out_dir}')")
    return meta


if __name__ == '__main__':
    main()
