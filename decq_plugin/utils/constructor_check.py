"""Catch misspelt keys inside built config dicts before anything is built.

Every dict with a registered ``type`` (models and their parts, hooks, loops,
datasets, samplers, transforms, evaluators, optimizers, optim wrappers,
schedulers, the visualizer) becomes keyword arguments of that class; a key
it does not take fails only when the class is built (a ``TypeError`` after
the model, or, for ``CheckpointHook``, at the first ``save_checkpoint``
after a whole epoch). :func:`check_constructor_keys` reads each class's
signature instead and stops with one line per key and the argument it
probably means.

Types are looked up by name in this package's registries, their MMEngine
parents and the parents' other children (nothing is imported by dotted
name); a type that none of them knows is left to the registry. ``**kwargs``
is followed to the base class for the classes known to forward it there
(this package's classes, ``AmpOptimWrapper``, the scheduler mixins) and
to the classes that receive it (``EMAHook`` -> its ``ema_type``); any
other ``**kwargs`` accepts everything. Typeless ``train_cfg`` (with
``by_epoch``), ``val_cfg`` and ``test_cfg`` are checked against the loop
MMEngine builds for them, typeless ``*_dataloader`` dicts against
``torch.utils.data.DataLoader``.
"""
import difflib
import inspect
from typing import Any, Callable, Dict, FrozenSet, List, Optional

#: Keys read by MMEngine's builders, not passed to the constructor.
BUILDER_KEYS = frozenset({'type', '_scope_', 'priority',
                          'convert_to_iter_based', 'constructor',
                          'paramwise_cfg'})
#: Keys of a typeless dataloader dict that MMEngine builds itself.
_DATALOADER_PARTS = frozenset({'dataset', 'sampler', 'batch_sampler',
                               'collate_fn', 'worker_init_fn',
                               'num_batch_per_epoch',
                               'disable_subprocess_warning'})
#: Classes outside this package whose ``**kwargs`` go to their base class.
_FORWARDS_TO_BASE = frozenset({
    'mmengine.optim.optimizer.amp_optimizer_wrapper.AmpOptimWrapper',
    'mmengine.optim.scheduler.lr_scheduler.LRSchedulerMixin',
    'mmengine.optim.scheduler.momentum_scheduler.MomentumSchedulerMixin'})


class UnknownArgumentError(ValueError):
    """A key of a built config dict is no argument of its class."""


def _qualname(obj: Any) -> str:
    module = getattr(obj, '__module__', '')
    return f'{module}.{getattr(obj, "__qualname__", "")}'


def resolve_type(name: str) -> Optional[Callable]:
    """The class (or function) registered as ``name``: this package's
    registries first, then the MMEngine roots, then their other children;
    None when unknown or ambiguous, or for scoped / dotted names."""
    if not isinstance(name, str) or '.' in name or '::' in name:
        return None
    import mmengine.runner  # noqa: F401 - registers MMEngine's modules
    from mmengine.registry import Registry

    from decq_plugin import registry as ours
    own = [r for r in vars(ours).values() if isinstance(r, Registry)]
    roots = []
    for reg in own:
        reg.import_from_location()
        root = reg.parent if reg.parent is not None else reg
        if all(root is not r for r in roots):
            roots.append(root)
    others = [child for root in roots for child in root.children.values()
              if all(child is not r for r in own)]
    for level in (own, roots, others):
        found = {id(r.module_dict[name]): r.module_dict[name]
                 for r in level if name in r.module_dict}
        if len(found) == 1:
            return next(iter(found.values()))
        if found:
            return None
    return None


def _ema_target(cfg: Dict) -> Optional[FrozenSet[str]]:
    keys = accepted_keys(resolve_type(
        cfg.get('ema_type', 'ExponentialMovingAverage')), cfg)
    return None if keys is None else keys - {'model'}


#: Classes whose ``**kwargs`` go elsewhere than their base class ->
#: the keys that target accepts (None: anything).
_KWARGS_TARGETS: Dict[str, Callable[[Dict], Optional[FrozenSet[str]]]] = {
    # handed to Runner.save_checkpoint, which already gets every argument
    'mmengine.hooks.checkpoint_hook.CheckpointHook': lambda cfg: frozenset(),
    'mmengine.hooks.ema_hook.EMAHook': _ema_target,
}


def _own_init(cls: type) -> Optional[Callable]:
    return vars(cls).get('__init__')


def accepted_keys(obj: Optional[Callable],
                  cfg: Optional[Dict] = None) -> Optional[FrozenSet[str]]:
    """Keyword arguments ``obj`` (a class or function) takes; None when it
    takes any (``**kwargs`` going somewhere unknown) or is unknown."""
    if obj is None:
        return None
    if not inspect.isclass(obj):
        try:
            params = inspect.signature(obj).parameters.values()
        except (TypeError, ValueError):
            return None
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        return frozenset(p.name for p in params)
    keys = set()
    for cls in obj.__mro__:
        init = _own_init(cls)
        if init is None:
            continue
        if cls is object:
            return frozenset(keys)
        try:
            params = list(inspect.signature(init).parameters.values())[1:]
        except (TypeError, ValueError):
            return None
        keys |= {p.name for p in params
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return frozenset(keys)
        name = _qualname(cls)
        if name in _KWARGS_TARGETS:
            extra = _KWARGS_TARGETS[name](cfg or {})
            return None if extra is None else frozenset(keys | extra)
        if cls.__module__.split('.')[0] != 'decq_plugin' and \
                name not in _FORWARDS_TO_BASE and cls is not _torch_module():
            return None
    return frozenset(keys)


def _torch_module() -> type:
    import torch
    return torch.nn.Module


def _loop_for(key: str, cfg: Dict) -> Optional[Callable]:
    from mmengine.runner import (EpochBasedTrainLoop, IterBasedTrainLoop,
                                 TestLoop, ValLoop)
    if key == 'train_cfg':
        return EpochBasedTrainLoop if cfg['by_epoch'] else IterBasedTrainLoop
    return ValLoop if key == 'val_cfg' else TestLoop


def _dataloader_keys() -> FrozenSet[str]:
    from torch.utils.data import DataLoader
    return frozenset(inspect.signature(DataLoader).parameters) | \
        _DATALOADER_PARTS


def _problems(cfg: Dict, path: str, keys: Optional[FrozenSet[str]],
              what: str) -> List[str]:
    """One line per key of ``cfg`` (at ``path``) that ``what`` (a class
    taking ``keys``; None: anything) does not take."""
    if keys is None:
        return []
    lines = []
    for key in cfg:
        if key in keys or key in BUILDER_KEYS:
            continue
        close = difflib.get_close_matches(key, sorted(keys), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else \
            f' (it takes {", ".join(sorted(keys)) or "no arguments"})'
        lines.append(f'{path}.{key}: {what} takes no argument '
                     f'{key!r}{hint}')
    return lines


def unknown_constructor_keys(cfg: Any) -> List[str]:
    """One line per key of a built dict in ``cfg`` (a Config or dict) that
    its class does not take, with the argument it probably means."""
    tree = cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg
    lines: List[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            kind = node.get('type')
            if isinstance(kind, str):
                target = resolve_type(kind)
                lines.extend(_problems(node, path,
                                       accepted_keys(target, node), kind))
            for key, value in node.items():
                walk(value, f'{path}.{key}' if path else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f'{path}[{i}]')

    for key, value in tree.items():
        if isinstance(value, dict) and 'type' not in value:
            if key in ('val_cfg', 'test_cfg') or (
                    key == 'train_cfg' and 'by_epoch' in value):
                loop = _loop_for(key, value)
                keys = accepted_keys(loop)
                keys = None if keys is None else keys | {'by_epoch'}
                lines.extend(_problems(value, key, keys, loop.__name__))
            elif key.endswith('_dataloader'):
                lines.extend(_problems(value, key, _dataloader_keys(),
                                       'DataLoader'))
        walk(value, str(key))
    return lines


def key_verdict(cfg: Any, dotted: str) -> Optional[bool]:
    """For a key ``dotted`` (``model.perceptual_loss.pretrained_trunk``)
    that the config does not set: whether the class of its innermost built
    dict takes it; None when no class with a known signature decides."""
    tree = cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg
    parts = dotted.split('.')
    node = tree
    for i, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
            continue
        if isinstance(node, (list, tuple)) and part.isdigit() and \
                int(part) < len(node):
            node = node[int(part)]
            continue
        if i != len(parts) - 1 or not isinstance(node, dict) or \
                not isinstance(node.get('type'), str):
            return None
        keys = accepted_keys(resolve_type(node['type']), node)
        return None if keys is None else part in keys
    return True


def check_constructor_keys(cfg: Any, path: str) -> None:
    """Raise :class:`UnknownArgumentError` naming ``path``, each key that
    its class does not take and the argument it probably means."""
    lines = unknown_constructor_keys(cfg)
    if lines:
        raise UnknownArgumentError(
            f'{path}: {"; ".join(lines)}. Fix the spelling (python '
            'tools/misc/print_config.py CONFIG shows the merged config), or '
            'set allow_unknown_keys = True to skip this check')
