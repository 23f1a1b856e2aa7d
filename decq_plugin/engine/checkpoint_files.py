"""Checkpoint files on disk: written whole or not at all, found again after
a crash, and checked for non-finite values before they are written.

* :func:`atomic_write_text` / :func:`publish`: write to a temporary name,
  flush to disk, rename. A kill leaves the old file or the new one, never
  a part of either.
* :func:`is_complete_checkpoint`: a cheap test (the zip directory that
  ``torch.save`` writes last is present and lists a pickle).
* :func:`find_resume_checkpoint`: what auto-resume should load: the newest
  complete checkpoint: the file named by ``last_checkpoint`` unless a
  complete ``epoch_N.pth`` / ``iter_N.pth`` of a later step, written after
  it, lies beside it (a kill between the rename and the update of
  ``last_checkpoint``), else the newest complete numbered one in the
  folder.
* :func:`remove_stale_temporaries`: delete what killed writers left behind
  (``last_checkpoint.tmp<PID>`` of dead processes, ``*.pth.partial``).
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


def _step_of(path: str) -> Optional[Tuple[str, int]]:
    """``('epoch', 3)`` for ``.../epoch_3.pth``; None for other names."""
    match = _STEP_NAME.match(osp.basename(path))
    return (match.group(1), int(match.group(2))) if match else None


def _newest_complete(folders: List[str], kind: Optional[str] = None,
                     after: int = -1,
                     written_after: float = -1.0) -> Optional[str]:
    """The complete numbered checkpoint with the highest step above
    ``after`` (of ``kind`` when given; modified after ``written_after``)
    in ``folders``; incomplete ones passed over are logged."""
    found = sorted(((step, path) for folder in folders
                    for step, path in _numbered_checkpoints(folder)
                    if step > after and (kind is None or
                                         _step_of(path)[0] == kind)
                    and osp.getmtime(path) >= written_after),
                   reverse=True)
    for _, path in found:
        if is_complete_checkpoint(path):
            return path
        print_log(f'auto-resume: skipping incomplete {path}',
                  logger='current', level=logging.WARNING)
    return None


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint auto-resume should load from ``work_dir`` (None when
    there is none): the newest complete one. Each file passed over is
    logged with the reason."""
    marker = osp.join(work_dir, LAST_CHECKPOINT)
    named = ''
    if osp.isfile(marker):
        with open(marker) as f:
            named = f.read().strip()
    folders = [work_dir]
    if named and osp.dirname(named) not in folders:
        folders.insert(0, osp.dirname(named))
    if named and is_complete_checkpoint(named):
        step = _step_of(named)
        if step is None:  # a custom filename_tmpl: nothing to compare
            return named
        # Written after it too: not a leftover of an earlier, longer run.
        newer = _newest_complete(folders, kind=step[0], after=step[1],
                                 written_after=osp.getmtime(named))
        if newer is None:
            return named
        print_log(f'{marker} names {named}, but the newer {newer} is '
                  'complete (the run was killed before it updated '
                  f'{LAST_CHECKPOINT}); resuming from {newer}',
                  logger='current', level=logging.WARNING)
        return newer
    if osp.isfile(marker):
        print_log(
            f'{marker} names {named!r}, which is '
            f"{'missing or incomplete' if named else 'nothing (empty file)'};"
            ' looking for the newest complete checkpoint instead',
            logger='current', level=logging.WARNING)
    path = _newest_complete(folders)
    if path is not None:
        print_log(f'auto-resume: using {path}', logger='current',
                  level=logging.WARNING if named else logging.INFO)
    return path


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _stale_marker_tmp(name: str) -> bool:
    """``last_checkpoint.tmp<PID>`` of a process that is gone."""
    match = re.match(re.escape(LAST_CHECKPOINT) + r'\.tmp(\d+)$', name)
    return match is not None and not _pid_alive(int(match.group(1)))


def remove_stale_temporaries(work_dir: str, out_dir: str) -> List[str]:
    """Delete the leftovers of killed writers: ``last_checkpoint.tmp<PID>``
    in ``work_dir`` whose process is gone, and ``*.pth.partial`` in
    ``out_dir`` (call it on the main process, before a run writes
    checkpoints). Returns the paths removed."""
    removed = []
    for folder, stale in ((work_dir, _stale_marker_tmp),
                          (out_dir, lambda n: n.endswith('.pth.partial'))):
        if not osp.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = osp.join(folder, name)
            if stale(name) and osp.isfile(path):
                try:
                    os.remove(path)
                except FileNotFoundError:
                    continue
                removed.append(path)
    if removed:
        print_log(f'removed what killed runs left behind: {removed}',
                  logger='current', level=logging.WARNING)
    return removed


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
