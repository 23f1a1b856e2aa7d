"""Make the learning-rate schedule follow ``train_cfg.max_epochs``.

The shipped schedules (``configs/_base_/schedules``) set their phase
boundaries from the config's ``max_epochs``: the tokenizer warms up for one
epoch, then decays on a cosine to ``max_epochs`` (``T_max = max_epochs -
1``); stage 2 is constant for the first half and decays linearly over the
second. ``--cfg-options train_cfg.max_epochs=N`` changes only the loop, so
without this step a shortened run would stop half-way down its cosine.

:func:`fit_schedule_to_max_epochs` rewrites every epoch-based scheduler:
a ``begin`` / ``end`` equal to the old ``max_epochs`` becomes ``N``, one
equal to half of it (when that is more than one epoch) becomes ``N // 2``,
other boundaries (the warm-up epoch) stay; ``T_max`` that spanned its
phase spans the new phase; a phase that no longer starts before ``N`` is
dropped and an ``end`` past ``N`` is cut to ``N``.
"""
from typing import Any, Dict, List, Optional


def _rescaled(value: Any, old: int, new: int) -> Any:
    if not isinstance(value, int) or isinstance(value, bool):
        return value
    if value == old:
        return new
    if old % 2 == 0 and old // 2 > 1 and value == old // 2:
        return new // 2
    return value


def fit_schedule_to_max_epochs(cfg: Any, old: int) -> List[str]:
    """Rewrite ``cfg.param_scheduler`` (in place) for the run length
    ``cfg.train_cfg.max_epochs`` when the config was written for ``old``
    epochs; returns one line per change (empty when nothing changed)."""
    new = cfg.get('train_cfg', {}).get('max_epochs')
    schedulers = cfg.get('param_scheduler')
    if not isinstance(new, int) or new == old or schedulers is None:
        return []
    single = isinstance(schedulers, dict)
    entries = [schedulers] if single else list(schedulers)
    kept, changes = [], []
    for i, entry in enumerate(entries):
        name = f"param_scheduler[{i}] ({entry.get('type')})"
        if not isinstance(entry, dict) or not entry.get('by_epoch', True):
            kept.append(entry)
            continue
        begin = entry.get('begin', 0)
        end = entry.get('end')
        new_begin = _rescaled(begin, old, new)
        new_end = _rescaled(end, old, new)
        if isinstance(new_end, int) and new_end > new:
            new_end = new
        if (isinstance(new_begin, int) and new_begin >= new) or (
                isinstance(new_begin, int) and isinstance(new_end, int)
                and new_end <= new_begin):
            changes.append(f'{name}: dropped (epochs [{begin}, {end}) '
                           f'leave nothing of a {new}-epoch run)')
            continue
        if (new_begin, new_end) != (begin, end):
            entry['begin'], entry['end'] = new_begin, new_end
            changes.append(f'{name}: epochs [{begin}, {end}) -> '
                           f'[{new_begin}, {new_end})')
            t_max = entry.get('T_max')
            if isinstance(end, int) and t_max == end - begin:
                entry['T_max'] = new_end - new_begin
        kept.append(entry)
    cfg['param_scheduler'] = kept[0] if single and kept else kept
    return changes


def schedule_length_option(cfg_options: Optional[Dict]) -> bool:
    """Whether ``--cfg-options`` set ``train_cfg.max_epochs`` and left the
    schedulers alone (then the schedule follows the new length)."""
    if not cfg_options:
        return False
    options = dict(cfg_options)
    if any(key.startswith('param_scheduler') for key in options):
        return False
    if 'train_cfg.max_epochs' in options:
        return True
    train_cfg = options.get('train_cfg')
    return isinstance(train_cfg, dict) and 'max_epochs' in train_cfg
