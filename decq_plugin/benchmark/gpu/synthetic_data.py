"""Synthetic inputs of ImageNet layout for benchmark and smoke runs: latent
shards of a config's shapes and JPEG folders (nothing can be downloaded
on the GPU machines)."""
import os
import os.path as osp
from typing import Dict

import torch

from .plan import ROOT, init_scope


def write_latent_shards(root: str, shapes: Dict[str, tuple], count: int,
                        num_classes: int) -> None:
    """``count`` random float16 latents of ``shapes`` with random labels
    in a latent folder at ``root`` (kept when it is already there)."""
    from decq_plugin.datasets.latent_dataset import LatentShardWriter
    if osp.isfile(osp.join(root, 'meta.json')):
        return
    with LatentShardWriter(root, shard_size=1024, tokenizer='synthetic',
                           normalised=True) as writer:
        for start in range(0, count, 256):
            n = min(256, count - start)
            writer.add({k: torch.randn(n, *s, dtype=torch.float16)
                        for k, s in shapes.items()},
                       torch.randint(0, num_classes, (n, )))


def class_structure(classes: int, dim: int, rank: int,
                    generator: torch.Generator) -> tuple:
    """Class means [classes, dim] (std 0.8) and a rank-``rank`` spread
    basis [rank, dim] of structured synthetic latents."""
    means = torch.randn(classes, dim, generator=generator) * 0.8
    basis = torch.randn(rank, dim, generator=generator) / rank**0.5
    return means, basis


def structured_samples(means: torch.Tensor, basis: torch.Tensor,
                       labels: torch.Tensor,
                       generator: torch.Generator) -> torch.Tensor:
    """[n, dim] latents of ``labels`` [n]: class mean + low-rank spread
    (0.5) + white noise (0.2), so a model's loss falls as on real latents
    instead of sitting at the noise floor."""
    n = labels.shape[0]
    spread = torch.randn(n, basis.shape[0], generator=generator) @ basis
    noise = torch.randn(n, basis.shape[1], generator=generator)
    return means[labels] + spread * 0.5 + noise * 0.2


def _jpeg(args: tuple) -> None:
    import numpy as np
    from PIL import Image
    path, seed, size = args
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(base).resize(size, Image.BICUBIC).save(path, quality=90)


def write_jpegs(root: str, count: int, size: tuple) -> None:
    """``count`` JPEGs in ``root/train/n0000000k/`` (10 classes)."""
    from multiprocessing import Pool
    jobs = []
    for i in range(count):
        folder = osp.join(root, 'train', f'n{i % 10:08d}')
        os.makedirs(folder, exist_ok=True)
        path = osp.join(folder, f'img_{i:06d}.JPEG')
        if not osp.isfile(path):
            jobs.append((path, i, size))
    if len(jobs) < 256:
        for job in jobs:
            _jpeg(job)
    else:
        with Pool(min(8, os.cpu_count() or 1)) as pool:
            pool.map(_jpeg, jobs, chunksize=32)


def latent_shapes(config: str) -> Dict[str, tuple]:
    """Per-sample latent shapes of a stage-2 config's tokenizer (built on
    the meta device: nothing is allocated)."""
    from decq_plugin.registry import MODELS
    from decq_plugin.utils.launch import load_config
    init_scope()
    cfg = load_config(osp.join(ROOT, config))
    with torch.device('meta'):
        tokenizer = MODELS.build(cfg.model.tokenizer)
    return {k: tuple(v) for k, v in tokenizer.latent_shapes.items()}
