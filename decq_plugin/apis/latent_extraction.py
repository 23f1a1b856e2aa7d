"""Cache a tokenizer's latents of a dataset in a latent folder (the format
of ``decq_plugin.datasets.latent_dataset``), for stage-2 training.

    tokenizer = build_tokenizer_from_config(config, checkpoint)
    dataset = build_extraction_dataset(cfg, 'train', tokenizer.image_size)
    meta, encoded_now = extract_latents(tokenizer, dataset, 'data/latents')

Each item of the dataset (``dict(inputs=[3,H,W] in [0,1],
data_samples=dict(gt_label=int))``) is encoded with ``tokenizer.encode``
(normalised when the tokenizer's normaliser is enabled) and, with ``flip``,
so is its horizontally flipped image. Items are read in dataset order and
written in shards of ``shard_size``; rerunning continues after the shards
already on disk, and a complete folder of the first ``k`` images grows when
rerun with more (only its partial last shard is rewritten). A random
transform draws item ``p`` with the seed ``mix_seed(seed, p)``, so resumed
runs read the same crops.

Several processes (an initialised ``torch.distributed`` run): rank ``r`` of
``W`` encodes items ``r, r + W, ...`` into ``out_dir/rank_{r}``; rank 0
then writes ``out_dir/meta.json`` listing every rank's shards (rank 0's
items first). Resume with the same number of processes.
"""
import json
import os
import os.path as osp
from typing import List, NamedTuple, Optional, Union

import torch
from mmengine.dataset import default_collate
from mmengine.dist import barrier, get_dist_info
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from decq_plugin.datasets.latent_dataset import (META_FILE,
                                                 LatentShardWriter,
                                                 read_meta_file)
from decq_plugin.datasets.sample_seed import (SeededIndex, mix_seed,
                                              seed_everything_for)

DTYPES = ('float16', 'bfloat16', 'float32')


class Extraction(NamedTuple):
    """What :func:`extract_latents` returns: the folder's ``meta.json``
    content and how many images this process encoded now."""
    meta: dict
    encoded_now: int


# -- resuming -----------------------------------------------------------------
def write_json(path: str, obj: dict) -> None:
    """Write ``obj`` to ``path`` atomically (temporary file, rename)."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def read_meta(folder: str) -> Optional[dict]:
    """``folder/meta.json``, or ``None`` when there is none."""
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
def progress_label(folder: str) -> str:
    """The progress bar's label: ``'encoding -> <folder name>'`` (the
    folder is often named ``latents`` itself)."""
    return f'encoding -> {osp.basename(osp.normpath(folder))}'


@torch.no_grad()
def extract_rank(tokenizer: nn.Module, dataset: Dataset, folder: str,
                 *, rank: int = 0, world_size: int = 1,
                 num_images: Optional[int] = None, batch_size: int = 64,
                 num_workers: int = 0, shard_size: int = 1024,
                 dtype: str = 'float16', flip: bool = True,
                 file_format: str = 'safetensors', tokenizer_name: str = '',
                 settings: Optional[dict] = None,
                 device: Union[str, torch.device] = 'cpu',
                 progress: bool = True, seed: int = 0) -> int:
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
               desc=progress_label(folder))
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


def _module_device(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device('cpu')


def extract_latents(tokenizer: nn.Module, dataset: Dataset, out_dir: str,
                    *, num_images: Optional[int] = None,
                    batch_size: int = 64, num_workers: int = 0,
                    shard_size: int = 1024, dtype: str = 'float16',
                    flip: bool = True, file_format: str = 'safetensors',
                    tokenizer_name: str = '',
                    settings: Optional[dict] = None,
                    device: Union[str, torch.device, None] = None,
                    progress: bool = True, seed: int = 0) -> Extraction:
    """Encode the first ``num_images`` items of ``dataset`` (all by
    default) into the latent folder ``out_dir``, continuing what an earlier
    run left there.

    Args:
        tokenizer: a tokenizer in eval mode (``encode``: images [B,3,H,W]
            -> ``{'patch': [B,C,h,w], 'query': [B,Q,C]}``).
        dataset: items ``dict(inputs=[3,H,W], data_samples=dict(
            gt_label=int))``, e.g. :func:`build_extraction_dataset`'s.
        out_dir: the latent folder (read by ``CachedLatentDataset``).
        num_images: encode only the first ``num_images`` items.
        batch_size: images per forward pass (twice as many with ``flip``).
        num_workers: data-loader workers.
        shard_size: samples per shard file.
        dtype: storage dtype, one of ``DTYPES``.
        flip: also store the latents of the horizontally flipped images.
        file_format: ``'safetensors'`` or ``'pt'``.
        tokenizer_name: stored in ``meta.json``; a rerun must give the same.
        settings: more entries for ``meta.json`` (e.g. split, checkpoint);
            a rerun must give the same.
        device: where the images go (default the tokenizer's device).
        progress: show a progress bar on rank 0.
        seed: seed of the per-item randomness of a random transform.

    Returns:
        ``Extraction(meta, encoded_now)``: the folder's ``meta.json``
        (rank 0: the merged one) and the images this process encoded now.
    """
    if dtype not in DTYPES:
        raise ValueError(f'dtype must be one of {DTYPES}, got {dtype!r}')
    for name, value in (('batch_size', batch_size),
                        ('shard_size', shard_size)):
        if value < 1:
            raise ValueError(f'{name} must be >= 1, got {value}')
    if num_images is not None and num_images < 1:
        raise ValueError(f'num_images must be >= 1, got {num_images}')
    device = _module_device(tokenizer) if device is None else device
    rank, world_size = get_dist_info()
    single = world_size == 1
    folder = out_dir if single else osp.join(out_dir, f'rank_{rank}')
    top = read_meta(out_dir)
    if not single and top is not None and not top.get('merged_from'):
        raise ValueError(f'{out_dir} holds a single-process extraction;'
                         ' resume it without --launcher or use another '
                         '--out-dir')
    encoded_now = extract_rank(
        tokenizer, dataset, folder, rank=rank, world_size=world_size,
        num_images=num_images, batch_size=batch_size,
        num_workers=num_workers, shard_size=shard_size, dtype=dtype,
        flip=flip, file_format=file_format, tokenizer_name=tokenizer_name,
        settings=settings, device=device, progress=progress and rank == 0,
        seed=seed)
    barrier()
    meta = merge_rank_folders(out_dir, world_size) if (
        rank == 0 and not single) else read_meta(folder)
    return Extraction(meta, encoded_now)
