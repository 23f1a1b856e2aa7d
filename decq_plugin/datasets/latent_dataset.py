"""Tokenizer latents cached on disk: the format, its writer and its dataset.

Layout of a latent folder (written by :class:`LatentShardWriter`, used by
``tools/extract_latents.py``; read by :class:`CachedLatentDataset`)::

    out_dir/
      meta.json
      shard_00000.safetensors      (or shard_00000.pt)
      shard_00001.safetensors
      ...

``meta.json``::

    format        "decq_latents"; version: 1
    tokenizer     name of the tokenizer config that produced the latents
    normalised    true when the latents are already normalised by the
                  tokenizer's latent statistics
    latent_shapes {"patch": [C, h, w], "query": [Q, C]}  ("query" absent for
                  RAE-style tokenizers)
    num_queries   Q (0 without queries)
    has_flip      whether shards hold latents of the flipped images
    dtype         storage dtype, e.g. "float16"
    shard_size    samples per shard (the last shard may hold fewer)
    count         samples in all listed shards
    complete      false while extraction runs or after it was interrupted
    shards        [{"file": "shard_00000.safetensors", "start": 0,
                    "count": n, "sha256": hex}, ...]  (shard k holds samples
                  start..start+n-1; the SHA-256 of its file is checked
                  on first read; a shard without one is an error unless
                  the reader opts out with ``allow_missing_checksums``)
    ...           any extra keys given to the writer (``extra_meta``)

Tensors of a shard holding ``n`` samples::

    patch      [n, C, h, w]
    query      [n, Q, C]        only with queries
    label      [n]  int64       class index
    patch_flip [n, C, h, w]     latents of the horizontally flipped image,
    query_flip [n, Q, C]        only with has_flip (query_flip with queries)

``.safetensors`` shards are memory-mapped and read row by row; ``.pt`` shards
are ``torch.save`` of that dict, loaded with ``weights_only=True, mmap=True``.

Resuming: shards are written whole (to a temporary name, then renamed) and
``meta.json`` is rewritten after each one, so an interrupted extraction keeps
every listed shard. A new writer on the same folder continues after them:
``writer.num_written`` samples are done, in the order they were added; the
extraction tool reads its images in a fixed order and skips those.
"""
import bisect
import hashlib
import json
import os
import os.path as osp
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset

from decq_plugin.registry import DATASETS
from .sample_seed import sample_generator
from .transforms import check_positive_int

META_FILE = 'meta.json'
FORMAT_NAME = 'decq_latents'
FORMAT_VERSION = 1
LATENT_KEYS = ('patch', 'query')
_FILE_FORMATS = ('safetensors', 'pt')
_EXTRACT_HINT = ('write the folder with tools/extract_latents.py '
                 '(decq_plugin.datasets.latent_dataset.LatentShardWriter)')


class LatentFolderError(ValueError):
    """A latent folder or one of its shards is damaged or does not fit;
    the message names the file and what to do."""


def file_sha256(path: str, chunk: int = 1 << 23) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def read_meta_file(path: str) -> dict:
    """``meta.json`` as a dict, or a :class:`LatentFolderError` naming the
    file when it is not valid JSON (e.g. half-written)."""
    try:
        with open(path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LatentFolderError(
            f'{path} is not valid JSON ({err}): the file is damaged or was '
            'cut short. Rerun tools/extract_latents.py with the same '
            'arguments into a new --out-dir (or restore the file)') from None
    if not isinstance(meta, dict) or not isinstance(meta.get('shards'),
                                                     list):
        raise LatentFolderError(
            f"{path} does not hold a latent folder's metadata (no 'shards' "
            f'list); {_EXTRACT_HINT}')
    return meta


#: Keys of ``meta.json`` a reader needs, and of each entry of its shards.
_META_KEYS = ('format', 'complete', 'count', 'has_flip', 'latent_shapes',
              'tokenizer', 'normalised', 'num_queries')
_SHARD_KEYS = ('file', 'start', 'count')
#: How to opt out of checksums, for messages.
ALLOW_MISSING_HINT = (
    'If you trust these files, opt out: allow_missing_checksums=True '
    '(CachedLatentDataset; in a config '
    'train_dataloader.dataset.allow_missing_checksums=True) or '
    'tools/extract_latents.py --verify DIR --allow-missing-checksums; '
    'otherwise extract the latents again (the current writer records a '
    'checksum for every shard)')


def check_meta(meta: dict, path: str) -> None:
    """A :class:`LatentFolderError` naming ``path`` (the ``meta.json``) and
    the key when ``meta`` lacks a key a reader needs."""
    missing = [k for k in _META_KEYS if k not in meta]
    for i, shard in enumerate(meta['shards']):
        if not isinstance(shard, dict):
            missing.append(f'shards[{i}] (not a dict)')
            continue
        missing += [f'shards[{i}].{k}' for k in _SHARD_KEYS
                    if k not in shard]
    if missing:
        raise LatentFolderError(
            f'{path} lacks the keys {missing[:5]}: it was edited or '
            f'written by another program; {_EXTRACT_HINT}')


def verify_shard(folder: str, shard: dict,
                 allow_missing_checksums: bool = False) -> Optional[str]:
    """Why shard ``shard`` (an entry of ``meta['shards']``) of ``folder`` is
    damaged or unverifiable (no ``sha256`` recorded, unless
    ``allow_missing_checksums``), or None when it is intact."""
    path = osp.join(folder, shard['file'])
    if not osp.isfile(path):
        return f'{path} is missing'
    expected = shard.get('sha256')
    if not expected:
        return None if allow_missing_checksums else (
            f'{path} has no checksum in {META_FILE}, so it cannot be '
            'verified')
    actual = file_sha256(path)
    if actual != expected:
        return (f'{path} is damaged: its SHA-256 is {actual[:16]}..., '
                f'{META_FILE} records {expected[:16]}...')
    return None


def _atomic_write_json(path: str, obj: dict) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def _check_latents(latents: Mapping[str, torch.Tensor], arg: str,
                   batch: Optional[int] = None) -> int:
    """Validate a batched latents dict; return its batch size."""
    if not isinstance(latents, Mapping) or 'patch' not in latents:
        raise ValueError(f"{arg} must be a dict with a 'patch' tensor "
                         "[B, C, h, w] and optionally 'query' [B, Q, C]")
    extra = set(latents) - set(LATENT_KEYS)
    if extra:
        raise ValueError(f'{arg} has unknown keys {sorted(extra)}; '
                         f'allowed: {LATENT_KEYS}')
    dims = dict(patch=4, query=3)
    for key, value in latents.items():
        if not torch.is_tensor(value) or value.dim() != dims[key]:
            raise ValueError(f'{arg}[{key!r}] must be a {dims[key]}-d tensor,'
                             f' got {getattr(value, "shape", type(value))}')
        if batch is None:
            batch = value.shape[0]
        if value.shape[0] != batch:
            raise ValueError(f'{arg}[{key!r}] has batch size '
                             f'{value.shape[0]}, expected {batch}')
    return batch


class LatentShardWriter:
    """Write latents into shards of ``shard_size`` samples (format above).

    Args:
        out_dir: the latent folder; created when missing, resumed when it
            holds an unfinished extraction.
        shard_size: samples per shard.
        file_format: ``'safetensors'`` or ``'pt'``.
        tokenizer: tokenizer config name, stored in ``meta.json``.
        normalised: whether the latents are normalised by the latent stats.
        extra_meta: more JSON-serialisable entries for ``meta.json``.

    Use ``add`` for each batch, then ``close`` (or a ``with`` block) to write
    the last, partial shard and mark the folder complete.
    """

    def __init__(self, out_dir: str, shard_size: int = 1024,
                 file_format: str = 'safetensors', tokenizer: str = '',
                 normalised: bool = True,
                 extra_meta: Optional[dict] = None) -> None:
        check_positive_int(shard_size, 'shard_size')
        if file_format not in _FILE_FORMATS:
            raise ValueError(f'file_format must be one of {_FILE_FORMATS}, '
                             f'got {file_format!r}')
        self.out_dir = os.fspath(out_dir)
        self.file_format = file_format
        os.makedirs(self.out_dir, exist_ok=True)
        fresh = dict(format=FORMAT_NAME, version=FORMAT_VERSION,
                     tokenizer=tokenizer, normalised=bool(normalised),
                     latent_shapes=None, num_queries=None, has_flip=None,
                     dtype=None, shard_size=shard_size, count=0,
                     complete=False, shards=[], **(extra_meta or {}))
        meta_path = osp.join(self.out_dir, META_FILE)
        if osp.exists(meta_path):
            self.meta = read_meta_file(meta_path)
            self._check_resume(fresh)
        else:
            self.meta = fresh
        self._buffer: Dict[str, List[torch.Tensor]] = {}
        self._buffered = 0

    def _check_resume(self, fresh: dict) -> None:
        for key in ('format', 'shard_size', 'tokenizer', 'normalised'):
            if self.meta.get(key) != fresh[key]:
                raise ValueError(
                    f'{self.out_dir} holds latents with {key}='
                    f'{self.meta.get(key)!r}, this writer has {fresh[key]!r};'
                    ' use another out_dir or the same settings')
        for shard in self.meta['shards']:
            if not shard['file'].endswith('.' + self.file_format):
                raise ValueError(f'{self.out_dir} holds {shard["file"]}; '
                                 f'file_format={self.file_format!r} differs')
            if not osp.isfile(osp.join(self.out_dir, shard['file'])):
                raise FileNotFoundError(
                    f'{META_FILE} lists {shard["file"]} but it is missing '
                    f'from {self.out_dir}; delete the folder to start over')

    @property
    def num_written(self) -> int:
        """Samples stored in finished shards (buffered ones not counted)."""
        return self.meta['count']

    @property
    def complete(self) -> bool:
        return bool(self.meta['complete'])

    def completed_indices(self) -> range:
        """Positions (in ``add`` order) of the samples already on disk."""
        return range(self.num_written)

    def add(self, latents: Mapping[str, torch.Tensor],
            labels: Union[torch.Tensor, Sequence[int]],
            latents_flip: Optional[Mapping[str, torch.Tensor]] = None) -> None:
        """Append a batch.

        Args:
            latents: ``{'patch': [B, C, h, w], 'query': [B, Q, C]}``.
            labels: ``[B]`` class indices.
            latents_flip: latents of the flipped images, same keys/shapes;
                give it on every call or on none.
        """
        if self.complete:
            raise RuntimeError(f'{self.out_dir} is already complete')
        batch = _check_latents(latents, 'latents')
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        if labels.numel() != batch:
            raise ValueError(f'labels has {labels.numel()} entries, latents '
                             f'a batch of {batch}')
        rows = {k: v for k, v in latents.items()}
        if latents_flip is not None:
            _check_latents(latents_flip, 'latents_flip', batch)
            if set(latents_flip) != set(latents):
                raise ValueError('latents_flip must have the keys of latents,'
                                 f' {sorted(latents)}')
            rows.update({k + '_flip': v for k, v in latents_flip.items()})
        self._check_layout(latents, latents_flip is not None)
        dtype = getattr(torch, self.meta['dtype'])
        for key, value in rows.items():
            self._buffer.setdefault(key, []).append(
                value.detach().to('cpu', dtype))
        self._buffer.setdefault('label', []).append(labels)
        self._buffered += batch
        while self._buffered >= self.meta['shard_size']:
            self._flush(self.meta['shard_size'])

    def _check_layout(self, latents: Mapping[str, torch.Tensor],
                      has_flip: bool) -> None:
        shapes = {k: list(v.shape[1:]) for k, v in latents.items()}
        if self.meta['latent_shapes'] is None:
            self.meta.update(
                latent_shapes=shapes, has_flip=has_flip,
                num_queries=shapes['query'][0] if 'query' in shapes else 0,
                dtype=str(latents['patch'].dtype).replace('torch.', ''))
        elif shapes != self.meta['latent_shapes']:
            raise ValueError(f'latent shapes {shapes} differ from the stored '
                             f'{self.meta["latent_shapes"]}')
        if has_flip != self.meta['has_flip']:
            raise ValueError('latents_flip must be given on every add or on '
                             f'none (stored has_flip={self.meta["has_flip"]})')

    def _flush(self, n: int) -> None:
        """Write the first ``n`` buffered samples as the next shard."""
        tensors = {}
        for key, parts in self._buffer.items():
            whole = torch.cat(parts)
            tensors[key] = whole[:n].contiguous()
            self._buffer[key] = [whole[n:]]
        self._buffered -= n
        name = f'shard_{len(self.meta["shards"]):05d}.{self.file_format}'
        path = osp.join(self.out_dir, name)
        tmp = path + '.tmp'
        if self.file_format == 'safetensors':
            save_file(tensors, tmp)
        else:
            torch.save(tensors, tmp)
        digest = file_sha256(tmp)
        os.replace(tmp, path)
        self.meta['shards'].append(
            dict(file=name, start=self.meta['count'], count=n,
                 sha256=digest))
        self.meta['count'] += n
        _atomic_write_json(osp.join(self.out_dir, META_FILE), self.meta)

    def close(self) -> None:
        """Write the last partial shard and mark the folder complete."""
        if self.complete:
            return
        if self._buffered:
            self._flush(self._buffered)
        if self.meta['latent_shapes'] is None:
            raise RuntimeError(f'no latents were added to {self.out_dir}')
        self.meta['complete'] = True
        _atomic_write_json(osp.join(self.out_dir, META_FILE), self.meta)

    def __enter__(self) -> 'LatentShardWriter':
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def _open_shard(path: str):
    """An open shard, or a :class:`LatentFolderError` naming the file."""
    try:
        if path.endswith('.safetensors'):
            return safe_open(path, framework='pt')
        return torch.load(path, map_location='cpu', weights_only=True,
                          mmap=True)
    except Exception as err:  # SafetensorError, UnpicklingError, OSError
        raise LatentFolderError(
            f'cannot read latent shard {path} ({type(err).__name__}: '
            f'{str(err)[:200]}); it is damaged, cut short or not a shard. '
            'Shards are read as plain tensors only (weights_only=True); '
            'extract the latents again (tools/extract_latents.py)') from None


@DATASETS.register_module()
class CachedLatentDataset(Dataset):
    """Latents written by :class:`LatentShardWriter`.

    Item ``i``::

        dict(inputs=dict(patch=Tensor[C, h, w], query=Tensor[Q, C]),
             data_samples=dict(gt_label=int))

    (``query`` only when the folder has queries).

    Args:
        data_root: the latent folder.
        use_flip: with probability 0.5 (seeded per sample by
            ``SeededSampler``, else torch's global RNG) return the
            latents of the flipped image; needs ``has_flip`` in the folder.
        dtype: dtype of the returned tensors, e.g. ``'float32'``.
        max_samples: use only the first ``max_samples``.
        verify: check each shard's SHA-256 (recorded in ``meta.json``) the
            first time this process opens it.
        allow_missing_checksums: with ``verify``, read shards that carry no
            SHA-256 unchecked (folders of an older writer); without it such
            a folder is a :class:`LatentFolderError`.

    One shard is open at a time (memory-mapped); reading in order, as
    within a shuffled shard-sized window, touches each shard once.
    """

    def __init__(self, data_root: str, use_flip: bool = True,
                 dtype: str = 'float32',
                 max_samples: Optional[int] = None,
                 verify: bool = True,
                 allow_missing_checksums: bool = False) -> None:
        super().__init__()
        self.data_root = os.fspath(data_root)
        meta_path = osp.join(self.data_root, META_FILE)
        if not osp.isfile(meta_path):
            raise FileNotFoundError(f'no {META_FILE} in {self.data_root!r}; '
                                    f'{_EXTRACT_HINT}')
        self.meta = read_meta_file(meta_path)
        check_meta(self.meta, meta_path)
        if self.meta.get('format') != FORMAT_NAME:
            raise ValueError(f'{meta_path} is not a {FORMAT_NAME} folder')
        if not self.meta['complete']:
            raise RuntimeError(
                f'latent extraction into {self.data_root!r} stopped after '
                f'{self.meta["count"]} samples; rerun it to resume')
        if use_flip and not self.meta['has_flip']:
            raise ValueError(f'use_flip=True but {self.data_root!r} holds no '
                             'flipped latents; set use_flip=False')
        if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
            raise ValueError(f'dtype must name a torch dtype, got {dtype!r}')
        if max_samples is not None:
            check_positive_int(max_samples, 'max_samples')
        self.use_flip = bool(use_flip)
        self.dtype = getattr(torch, str(dtype))
        self.keys = tuple(k for k in LATENT_KEYS
                          if k in self.meta['latent_shapes'])
        self._starts = [s['start'] for s in self.meta['shards']]
        count = self.meta['count']
        self._len = count if max_samples is None else min(count, max_samples)
        self._cache = None  # (shard index, open shard): an LRU of one
        self.verify = bool(verify)
        self.allow_missing_checksums = bool(allow_missing_checksums)
        unchecked = [s['file'] for s in self.meta['shards']
                     if not s.get('sha256')]
        if self.verify and unchecked and not self.allow_missing_checksums:
            raise LatentFolderError(
                f'{meta_path} records no checksum (sha256) for '
                f'{len(unchecked)} shards, e.g. {unchecked[:3]}: they '
                f'cannot be verified. {ALLOW_MISSING_HINT}')
        self._verified = set()  # shards checked in this process

    @property
    def latent_shapes(self) -> Dict[str, tuple]:
        return {k: tuple(v) for k, v in self.meta['latent_shapes'].items()}

    @property
    def metainfo(self) -> dict:
        return {k: self.meta[k] for k in
                ('tokenizer', 'normalised', 'latent_shapes', 'num_queries')}

    def __len__(self) -> int:
        return self._len

    def _shard(self, k: int):
        if self._cache is None or self._cache[0] != k:
            entry = self.meta['shards'][k]
            path = osp.join(self.data_root, entry['file'])
            if self.verify and k not in self._verified:
                problem = verify_shard(self.data_root, entry,
                                       self.allow_missing_checksums)
                if problem:
                    raise LatentFolderError(
                        f'{problem}. Find every damaged shard with '
                        f'tools/extract_latents.py --verify {self.data_root}'
                        ' and extract the latents again into a new folder')
                self._verified.add(k)
            self._cache = (k, _open_shard(path))
        return self._cache[1]

    def _row(self, shard, key: str, row: int, k: int) -> torch.Tensor:
        """Row ``row`` of tensor ``key`` in shard ``k``; a shard that
        lacks the key or the row (it disagrees with ``meta.json``) is a
        :class:`LatentFolderError` naming the file."""
        try:
            if isinstance(shard, dict):
                return shard[key][row]
            return shard.get_slice(key)[row]
        except Exception as err:  # KeyError, IndexError, SafetensorError
            names = sorted(shard.keys())
            path = osp.join(self.data_root, self.meta['shards'][k]['file'])
            if key not in names:
                what = f'has no tensor {key!r} (it holds {names})'
            elif isinstance(err, IndexError) or 'index' in str(err).lower():
                what = f'has no row {row} of {key!r}'
            else:
                raise
            raise LatentFolderError(
                f'latent shard {path} {what}, unlike what '
                f'{osp.join(self.data_root, META_FILE)} records; the folder '
                'was changed after extraction. Extract the latents again '
                '(tools/extract_latents.py) into a new folder') from None

    def __getitem__(self, index: int) -> dict:
        if not -self._len <= index < self._len:
            raise IndexError(f'index {index} out of range for {self._len}')
        generator = sample_generator(index)
        index %= self._len
        k = bisect.bisect_right(self._starts, index) - 1
        row = index - self._starts[k]
        shard = self._shard(k)
        flip = self.use_flip and bool(
            torch.rand((), generator=generator) < 0.5)
        suffix = '_flip' if flip else ''
        inputs = {key: self._row(shard, key + suffix, row, k).to(
            self.dtype, copy=True) for key in self.keys}
        label = int(self._row(shard, 'label', row, k))
        return dict(inputs=inputs, data_samples=dict(gt_label=label))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state['_cache'] = None  # open files do not pickle (worker spawn)
        return state

    def __repr__(self) -> str:
        return (f'CachedLatentDataset(data_root={self.data_root!r}, '
                f'len={len(self)}, shapes={self.latent_shapes}, '
                f'use_flip={self.use_flip})')


def verify_folder(folder: str,
                  allow_missing_checksums: bool = False) -> List[str]:
    """Every problem of a latent folder: an unreadable ``meta.json`` or one
    that lacks a key, and each shard that is missing, carries no checksum
    (unless ``allow_missing_checksums``) or whose SHA-256 differs from the
    one recorded (empty when all is well). Merged multi-process folders are
    checked shard by shard too."""
    meta_path = osp.join(folder, META_FILE)
    if not osp.isfile(meta_path):
        return [f'no {META_FILE} in {folder}; {_EXTRACT_HINT}']
    try:
        meta = read_meta_file(meta_path)
        check_meta(meta, meta_path)
    except LatentFolderError as err:
        return [str(err)]
    problems = [p for p in (verify_shard(folder, shard,
                                         allow_missing_checksums)
                            for shard in meta['shards']) if p]
    if any('has no checksum' in p for p in problems):
        problems.append(ALLOW_MISSING_HINT)
    return problems


def verify_summary(folder: str) -> str:
    """The line ``--verify`` prints for a folder without problems: how many
    shards were checked, and how many carry no checksum (allowed)."""
    shards = read_meta_file(osp.join(folder, META_FILE))['shards']
    unchecked = sum(not s.get('sha256') for s in shards)
    if not unchecked:
        return f'{folder}: every shard matches its checksum'
    return (f'{folder}: {len(shards) - unchecked} shards match their '
            f'checksum; {unchecked} carry none and were not verified '
            '(--allow-missing-checksums)')
