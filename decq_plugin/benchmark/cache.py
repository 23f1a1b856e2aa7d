"""Resumable results: one JSON file per tokenizer, keyed by a hash of
everything its numbers depend on.

The key covers the resolved config (after ``cfg_options``), the checkpoint
(absolute path, modification time and size, or the seed of random
weights) and the suite's data and metric settings. A rerun reads a file
whose key matches instead of evaluating again; any change makes a new key,
so the tokenizer is evaluated afresh.
"""
import hashlib
import json
import os
import os.path as osp
import re
from typing import Any, Optional

# Bump when the meaning of stored numbers changes.
RESULT_VERSION = 1


def canonical_json(obj: Any) -> str:
    """Deterministic JSON text (sorted keys; tuples as lists; other
    objects by ``str``)."""
    return json.dumps(obj, sort_keys=True, default=str, ensure_ascii=True,
                      separators=(',', ':'))


def digest(obj: Any) -> str:
    """sha256 hex digest of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def file_fingerprint(path: Optional[str]) -> Optional[dict]:
    """``{path, mtime_ns, size}`` of a local file (``{path}`` alone for
    remote ones); None for no file."""
    if path is None:
        return None
    if '://' in path:
        return dict(path=path)
    stat = os.stat(path)
    return dict(path=osp.abspath(path), mtime_ns=stat.st_mtime_ns,
                size=stat.st_size)


def result_key(config: dict, checkpoint: Optional[str], seed: int,
               data_settings: dict) -> str:
    """The cache key of one tokenizer's reconstruction numbers."""
    return digest(dict(version=RESULT_VERSION, config=config,
                       checkpoint=file_fingerprint(checkpoint),
                       seed=seed if checkpoint is None else None,
                       data=data_settings))


def slug(name: str) -> str:
    """A file-name-safe, collision-free form of a tokenizer name."""
    readable = re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('_') or 'tok'
    return f'{readable[:60]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}'


def result_path(out_dir: str, name: str) -> str:
    return osp.join(out_dir, 'results', f'{slug(name)}.json')


def load_result(path: str, key: str) -> Optional[dict]:
    """The stored result at ``path`` if its key is ``key``, else None."""
    if not osp.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            result = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None  # a broken file is recomputed
    return result if result.get('key') == key else None


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON; readers never see a partial file."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(obj, f, indent=1, sort_keys=False, default=str)
        f.write('\n')
    os.replace(tmp, path)
