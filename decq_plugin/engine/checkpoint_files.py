"""Checkpoint files on disk: written whole or not at all, found again after
a crash, and checked for non-finite values before they are written.

* :func:`atomic_write_text` / :func:`publish`: write to a temporary name,
  flush to disk, rename. A kill leaves the old file or the new one, never
  a part of either.
* :func:`is_complete_checkpoint`: a cheap test (the zip directory that
  ``torch.save`` writes last is present and lists a pickle).
* :func:`find_resume_checkpoint`: what auto-resume should load: the file
  named by ``last_checkpoint`` when it is complete, else the newest complete
  ``epoch_N.pth`` / ``iter_N.pth`` in the folder.
* :func:`non_finite_entries`: the names of tensors holding NaN or Inf.
"""
import logging
import os
import os.path as osp
import re
import zipfile
from typing import Any, Iterator, List, Mapping, Optional, Tuple

import torch
from mmengine.logging import print_log

LAST_CHECKPOINT = 'last_checkpoint'
_STEP_NAME = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(tmp: str, final: str) -> None:
    """Flush ``tmp`` to disk and rename it to ``final`` (atomic)."""
    with open(tmp, 'rb+') as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(osp.dirname(osp.abspath(final)))


def atomic_write_text(path: str, text: str) -> None:
    """Replace ``path`` by a file holding ``text``, atomically."""
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(text)
    publish(tmp, path)


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a whole ``torch.save`` file (its zip directory,
    written last, is readable and lists a pickle)."""
    if not osp.isfile(path) or osp.getsize(path) == 0:
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith('data.pkl') for n in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _numbered_checkpoints(folder: str) -> List[Tuple[int, str]]:
    found = []
    for name in os.listdir(folder) if osp.isdir(folder) else []:
        match = _STEP_NAME.match(name)
        if match:
            found.append((int(match.group(2)), osp.join(folder, name)))
    return sorted(found, reverse=True)


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint auto-resume should load from ``work_dir`` (None when
    there is none). Each file passed over is logged with the reason."""
    marker = osp.join(work_dir, LAST_CHECKPOINT)
    named = ''
    if osp.isfile(marker):
        with open(marker) as f:
            named = f.read().strip()
        if named and is_complete_checkpoint(named):
            return named
        print_log(
            f'{marker} names {named!r}, which is '
            f"{'missing or incomplete' if named else 'nothing (empty file)'};"
            ' looking for the newest complete checkpoint instead',
            logger='current', level=logging.WARNING)
    folders = [work_dir]
    if named and osp.dirname(named) not in folders:
        folders.insert(0, osp.dirname(named))
    for folder in folders:
        for _, path in _numbered_checkpoints(folder):
            if is_complete_checkpoint(path):
                print_log(f'auto-resume: using {path}', logger='current',
                          level=logging.WARNING if named else logging.INFO)
                return path
            print_log(f'auto-resume: skipping incomplete {path}',
                      logger='current', level=logging.WARNING)
    return None


def _tensors(obj: Any, name: str) -> Iterator[Tuple[str, torch.Tensor]]:
    if torch.is_tensor(obj):
        yield name, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _tensors(value, f'{name}.{key}' if name else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f'{name}[{i}]')


def non_finite_entries(obj: Any, name: str = '') -> List[str]:
    """Names of the floating-point tensors in ``obj`` (nested dicts/lists)
    that hold NaN or Inf."""
    bad = []
    for key, tensor in _tensors(obj, name):
        if tensor.is_floating_point() or tensor.is_complex():
            if not bool(torch.isfinite(tensor).all()):
                bad.append(key)
    return bad


def resolve_auto_resume(cfg) -> None:
    """For ``resume=True`` without a file, set ``cfg.load_from`` to the
    checkpoint :func:`find_resume_checkpoint` picks in ``cfg.work_dir``
    (MMEngine's own look-up trusts ``last_checkpoint`` blindly)."""
    if cfg.get('resume') and not cfg.get('load_from') and cfg.get('work_dir'):
        cfg.load_from = find_resume_checkpoint(cfg.work_dir)
        if cfg.load_from is None:
            print_log(f'auto-resume: no complete checkpoint in '
                      f'{cfg.work_dir}; training from the start',
                      logger='current', level=logging.WARNING)
            cfg.resume = False
