"""Say so when ``--resume`` finds a run that has nothing left to train.

MMEngine resumes a finished run, finds its loop already at ``max_epochs``
and returns: the command exits 0 having done nothing and said nothing.
:func:`finished_run_message` reads the progress stored in the checkpoint's
``meta`` (memory-mapped, ``weights_only``: no tensor is read, no code runs)
before anything is built, and returns what to tell the user.
"""
from typing import Any, Optional, Tuple

import torch

from .checkpoint_files import is_complete_checkpoint


def checkpoint_progress(path: str) -> Optional[Tuple[int, int]]:
    """``(epoch, iter)`` stored in ``meta`` of the checkpoint at ``path``
    (epochs and iterations completed); None when it cannot be read."""
    if not is_complete_checkpoint(path):
        return None
    try:
        state = torch.load(path, map_location='cpu', weights_only=True,
                           mmap=True)
    except Exception:  # noqa: BLE001 - the runner reports unreadable files
        return None
    meta = state.get('meta') if isinstance(state, dict) else None
    if not isinstance(meta, dict):
        return None
    epoch, step = meta.get('epoch'), meta.get('iter')
    if not isinstance(epoch, int) or not isinstance(step, int):
        return None
    return epoch, step


def finished_run_message(cfg: Any, config_path: str) -> Optional[str]:
    """What to print instead of resuming when ``cfg`` resumes
    (``cfg.resume`` with ``cfg.load_from``) a run that has already reached
    ``train_cfg.max_epochs`` (or ``max_iters``); None otherwise."""
    path = cfg.get('load_from')
    train_cfg = cfg.get('train_cfg') or {}
    if not cfg.get('resume') or not isinstance(path, str) or '://' in path:
        return None
    progress = checkpoint_progress(path)
    if progress is None:
        return None
    epoch, step = progress
    if 'max_epochs' in train_cfg:
        key, done, total = 'max_epochs', epoch, train_cfg['max_epochs']
        unit = 'epoch'
    elif 'max_iters' in train_cfg:
        key, done, total = 'max_iters', step, train_cfg['max_iters']
        unit = 'iteration'
    else:
        return None
    if not isinstance(total, int) or done < total:
        return None
    more = max(2 * done, done + 1)
    return (f'{path}: the run is finished ({unit} {done} of train_cfg.'
            f'{key}={total}); nothing left to train. To train longer, '
            f'resume with a larger {key}: python tools/train.py '
            f'{config_path} --work-dir {cfg.get("work_dir")} --resume '
            f'--cfg-options train_cfg.{key}={more} (the learning-rate '
            'schedule resumes as saved: the extra epochs run at its final '
            'rate). To start over, use another --work-dir.')
