"""What latent extraction reads, from a config: the tokenizer (weights from
a checkpoint, latent statistics from a file) and the dataset with RAE's ADM
centre crop at the tokenizer's image size in place of its own transform."""
import inspect
import warnings
from typing import List, Optional, Union

import torch
from mmengine.config import Config
from torch import nn
from torch.utils.data import Dataset

from decq_plugin.registry import DATASETS
from decq_plugin.utils.launch import check_file
from .build import build_tokenizer_from_config


def tokenizer_config(cfg: Config) -> dict:
    """The tokenizer part of ``cfg.model`` (nested or the model itself)."""
    return cfg.model.tokenizer if 'tokenizer' in cfg.model else cfg.model


def resolve_stats(stats: Optional[str], tok_cfg: dict) -> Optional[str]:
    """The statistics file of ``stats``: a path, ``'none'`` (no file: raw
    latents), or ``None`` (the config's ``latent_stats``)."""
    if stats is None:
        return tok_cfg.get('latent_stats')
    return None if stats.lower() == 'none' else stats


def build_extraction_tokenizer(cfg: Config, checkpoint: Optional[str] = None,
                               stats: Optional[str] = None,
                               device: Union[str, torch.device] = 'cpu'
                               ) -> nn.Module:
    """The tokenizer of ``cfg`` (edited in place) with the weights of
    ``checkpoint`` (``None``: those the config builds), in eval mode.

    ``stats``: a latent statistics file (its latents are then written
    normalised), ``'none'`` (raw latents, even when the checkpoint holds
    statistics) or ``None`` (the config's ``latent_stats`` file, or what the
    checkpoint holds when the config names none)."""
    tok_cfg = tokenizer_config(cfg)
    stats_file = resolve_stats(stats, tok_cfg)
    if stats_file:
        check_file(stats_file, 'latent statistics file')
    if 'latent_stats' in tok_cfg:
        tok_cfg['latent_stats'] = None  # loaded below, after the checkpoint
    encoder = tok_cfg.get('encoder')
    if checkpoint and isinstance(encoder, dict) and encoder.get('pretrained'):
        encoder['pretrained'] = False  # the VFM comes from the checkpoint
    tokenizer = build_tokenizer_from_config(cfg, checkpoint, device=device)
    if stats_file:
        tokenizer.normalizer.load(stats_file)
    elif stats is not None:  # 'none': raw even if the ckpt has stats
        tokenizer.normalizer.enabled.fill_(False)
    return tokenizer


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


def build_extraction_dataset(cfg: Config, split: str, image_size: int,
                             keep_transform: bool = False) -> Dataset:
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
