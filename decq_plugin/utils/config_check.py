"""Catch misspelt config keys before a run starts.

MMEngine passes the top-level keys it knows to the ``Runner`` and ignores
the rest, so ``trian_cfg = dict(max_epochs=1)`` changes nothing and the run
goes on with the inherited ``train_cfg``. Helper variables at the top of a
config (``image_size``, ``lr``, ``tiny_vfm`` ...) are legitimate, so a
top-level key is refused only when it looks like a misspelling of a key the
runner reads (close to one, or named like one: ``*_cfg``, ``*_dataloader``,
``*_evaluator``, ``*_hooks``). Opt out with ``allow_unknown_keys = True`` in
the config (or ``--cfg-options allow_unknown_keys=True``).

Keys nested in a dict that is built into a class are checked against the
class's arguments before anything is built
(:mod:`decq_plugin.utils.constructor_check`; ``arch`` dicts list their
allowed keys when built). A ``type`` that no registry knows but that is
close to a registered name (``AutoencoderModle``) is refused before the
runner is built, with the name it probably means
(:func:`check_registered_types`).
"""
import difflib
import inspect
import re
from typing import Any, List, Set

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


class UnknownTypeError(ValueError):
    """A config ``type`` looks like a misspelt registered name."""


def registered_names() -> Set[str]:
    """Every name registered in this package's registries, their MMEngine
    parents and the parents' other children (mmpretrain ...); call after
    ``register_all_modules``."""
    from mmengine.registry import Registry

    from decq_plugin import registry as ours
    names: Set[str] = set()
    roots = []
    for reg in vars(ours).values():
        if not isinstance(reg, Registry):
            continue
        reg.import_from_location()
        names |= set(reg.module_dict)
        root = reg.parent if reg.parent is not None else reg
        if all(root is not r for r in roots):
            roots.append(root)
    for root in roots:
        names |= set(root.module_dict)
        for child in root.children.values():
            names |= set(child.module_dict)
    return names


def misspelt_types(cfg: Any) -> List[str]:
    """One line per ``type`` string in ``cfg`` that no registry knows and
    that is close to a registered name (scoped names ``a.B`` / ``a::B``
    and names with no close match are left to the registry)."""
    known = registered_names()
    vocabulary = sorted(known)
    lines: List[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            kind = node.get('type')
            if isinstance(kind, str) and kind not in known and \
                    '.' not in kind and '::' not in kind:
                close = difflib.get_close_matches(kind, vocabulary, n=1,
                                                  cutoff=0.8)
                if close:
                    lines.append(f'{path or "<root>"}.type={kind!r} (did '
                                 f'you mean {close[0]!r}?)')
            for key, value in node.items():
                walk(value, f'{path}.{key}' if path else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f'{path}[{i}]')

    walk(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg, '')
    return lines


def check_registered_types(cfg: Any, path: str) -> None:
    """Raise :class:`UnknownTypeError` naming ``path``, each misspelt
    ``type`` and the registered name it probably means."""
    lines = misspelt_types(cfg)
    if lines:
        raise UnknownTypeError(
            f'{path}: no registry knows {"; ".join(lines)}. Fix the name '
            '(python tools/misc/print_config.py CONFIG shows the merged '
            'config)')
