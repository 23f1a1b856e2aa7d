"""Catch misspelt config keys before a run starts.

MMEngine passes the top-level keys it knows to the ``Runner`` and ignores
the rest, so ``trian_cfg = dict(max_epochs=1)`` changes nothing and the run
goes on with the inherited ``train_cfg``. Helper variables at the top of a
config (``image_size``, ``lr``, ``tiny_vfm`` ...) are legitimate, so a
top-level key is refused only when it looks like a misspelling of a key the
runner reads (close to one, or named like one: ``*_cfg``, ``*_dataloader``,
``*_evaluator``, ``*_hooks``). Opt out with ``allow_unknown_keys = True`` in
the config (or ``--cfg-options allow_unknown_keys=True``).

Keys nested in a dict that is built into a class are checked by the class
(an unexpected keyword argument is a ``TypeError``; ``arch`` dicts list
their allowed keys).
"""
import difflib
import inspect
import re
from typing import List

ALLOW_UNKNOWN_KEY = 'allow_unknown_keys'
_EXTRA_KNOWN = ('_base_', 'runner_type', 'allow_partial_load_from',
                ALLOW_UNKNOWN_KEY, 'work_dir', 'launcher', 'gpu_ids')
_RUNNER_LIKE = ('_cfg', '_dataloader', '_evaluator', '_hooks', '_scheduler')


class UnknownConfigKeyError(ValueError):
    """A top-level config key looks like a misspelt runner key."""


def runner_keys() -> List[str]:
    """Top-level keys the MMEngine ``Runner`` reads."""
    from mmengine.runner import Runner
    names = set(inspect.signature(Runner.__init__).parameters) - {'self'}
    # ... and the keys it reads from its config (model_wrapper_cfg, compile)
    source = inspect.getsource(Runner)
    names |= set(re.findall(r"cfg(?:\.get\(|\[)'(\w+)'", source))
    return sorted(names | set(_EXTRA_KNOWN))


def suspicious_top_level_keys(cfg) -> List[str]:
    """One line per top-level key of ``cfg`` that looks like a misspelt
    runner key (with the key it probably means)."""
    known = runner_keys()
    lines = []
    for key in cfg.keys():
        if key in known or key.startswith('_'):
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        if close:
            lines.append(f'{key!r} (did you mean {close[0]!r}?)')
        elif key.endswith(_RUNNER_LIKE):
            lines.append(f'{key!r} (named like a runner key, but the runner '
                         'reads no such key)')
    return lines


def check_top_level_keys(cfg, path: str) -> None:
    """Raise :class:`UnknownConfigKeyError` naming ``path`` and the keys
    unless the config sets ``allow_unknown_keys = True``."""
    if cfg.get(ALLOW_UNKNOWN_KEY, False):
        return
    lines = suspicious_top_level_keys(cfg)
    if lines:
        raise UnknownConfigKeyError(
            f'{path}: the runner ignores the top-level keys '
            f'{", ".join(lines)}; fix the spelling, or set '
            f'{ALLOW_UNKNOWN_KEY} = True in the config (or --cfg-options '
            f'{ALLOW_UNKNOWN_KEY}=True) to keep them')
