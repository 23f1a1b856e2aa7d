"""Configs from files others wrote: checked before any registry sees them.

An MMEngine registry asked to build ``dict(type=...)`` does more than look a
name up: a dotted ``type`` it does not know (``'os.system'``,
``'subprocess.call'``) is imported and called with the other keys as
arguments, a ``_scope_`` key imports ``<scope>.registry``, and a class or
function given as ``type`` is called as it is. So a JSON file that reaches
``MODELS.build`` can run any command.

Content read from a file (an exported folder's ``config.json``, a benchmark
suite, a checkpoint) goes through :func:`check_buildable` first. It accepts
only:

* ``type`` values that are names registered in this package's registries
  (``decq_plugin.registry``, members registered lazily through their
  ``locations`` included), optionally written ``'decq_plugin.<name>'``;
* ``_scope_`` equal to ``'decq_plugin'``;
* ``model_name`` values that are plain timm model names (no ``hf-hub:`` /
  ``local-dir:`` source);
* plain data elsewhere (dicts with string keys, lists, strings, numbers,
  booleans, ``None``); no string naming a remote location (``'://'``).

Anything else is refused with :class:`UnsafeConfigError` naming the file and
the key path (e.g. ``model.encoder.type``); nothing has been imported or
built at that point.
"""
import difflib
from typing import Any, FrozenSet, Iterable, Mapping, Optional, Tuple

from mmengine.registry import Registry

from decq_plugin import registry as _registries

__all__ = ['UnsafeConfigError', 'check_buildable', 'check_overrides',
           'iter_key_paths', 'registered_names']

PLAIN_TYPES = (str, int, float, bool, type(None))
TYPE_KEY, SCOPE_KEY, TIMM_NAME_KEY = 'type', '_scope_', 'model_name'


class UnsafeConfigError(ValueError):
    """File content would make a registry import or call something that is
    not a registered member of this package."""


def _own_registries() -> Tuple[Registry, ...]:
    return tuple(r for r in vars(_registries).values()
                 if isinstance(r, Registry)
                 and r.scope == _registries.SCOPE)


def registered_names(registry: Optional[Registry] = None) -> FrozenSet[str]:
    """Names registered in ``registry`` (one of ``decq_plugin.registry``'s)
    or, by default, in any of them; their ``locations`` are imported first,
    so lazily registered members count (this imports only this package)."""
    registries = _own_registries() if registry is None else (registry, )
    names = set()
    for reg in registries:
        if reg.scope != _registries.SCOPE:
            raise ValueError(f'{reg!r} is not a registry of '
                             f'{_registries.SCOPE!r}')
        reg.import_from_location()
        names.update(reg.module_dict)
    return frozenset(names)


def _refuse(source: str, key: str, what: str) -> UnsafeConfigError:
    return UnsafeConfigError(
        f'{source}: {key}: {what}; refusing to build from it (nothing was '
        'imported or built). Content read from a file may only name members '
        f'registered in {_registries.SCOPE!r} and plain timm model names.')


def _check_type(value: Any, names: FrozenSet[str], source: str,
                key: str) -> None:
    if not isinstance(value, str):
        raise _refuse(source, key, f'{type(value).__name__} {value!r} is not '
                      'a registered name (a class or function object would '
                      'be called as it is)')
    name = value
    prefix = _registries.SCOPE + '.'
    if name.startswith(prefix):
        name = name[len(prefix):]
    if name in names:
        return
    close = difflib.get_close_matches(name, sorted(names), n=3)
    hint = f'; did you mean {close}?' if close else ''
    why = (' (a dotted name would be imported and called)'
           if '.' in name else '')
    raise _refuse(source, key, f'{value!r} is not a name registered in '
                  f'{_registries.SCOPE!r}{why}{hint}')


def _check_timm_name(value: Any, source: str, key: str) -> None:
    if not isinstance(value, str) or ':' in value:
        raise _refuse(source, key, f'{value!r} is not a plain timm model name '
                      "(a source such as 'hf-hub:' or 'local-dir:' is not "
                      'accepted from a file)')


def _walk(value: Any, names: FrozenSet[str], top: FrozenSet[str],
          source: str, key: str) -> None:
    if isinstance(value, Mapping):
        for k in value:
            if not isinstance(k, str):
                raise _refuse(source, key, f'key {k!r} is not a string')
        if TYPE_KEY in value:
            _check_type(value[TYPE_KEY], top, source, f'{key}.{TYPE_KEY}')
        if SCOPE_KEY in value and value[SCOPE_KEY] != _registries.SCOPE:
            raise _refuse(source, f'{key}.{SCOPE_KEY}',
                          f'{value[SCOPE_KEY]!r} is not '
                          f'{_registries.SCOPE!r} (another scope would be '
                          'imported)')
        if TIMM_NAME_KEY in value:
            _check_timm_name(value[TIMM_NAME_KEY], source,
                             f'{key}.{TIMM_NAME_KEY}')
        for k, v in value.items():
            if k not in (TYPE_KEY, SCOPE_KEY, TIMM_NAME_KEY):
                _walk(v, names, names, source, f'{key}.{k}')
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _walk(v, names, names, source, f'{key}[{i}]')
    elif not isinstance(value, PLAIN_TYPES):
        raise _refuse(source, key, f'{type(value).__name__} {value!r} is not '
                      'plain data')
    elif isinstance(value, str) and '://' in value:
        raise _refuse(source, key, f'{value!r} names a remote location '
                      '(loaders of remote files may unpickle them)')


def check_buildable(cfg: Any,
                    source: str,
                    key: str,
                    registry: Optional[Registry] = None) -> None:
    """Raise :class:`UnsafeConfigError` unless ``cfg`` is plain data whose
    every ``type`` is a registered name (see the module docstring).

    Args:
        cfg: the config read from a file (a dict, or a list of them).
        source: the file, for messages (e.g. ``'exported/config.json'``).
        key: where ``cfg`` sits in the file (e.g. ``'model'``); key paths
            in messages start with it (``'model.encoder.type'``).
        registry: the registry ``cfg`` itself is built from; its top-level
            ``type`` must be registered there. Nested ``type`` values may
            name a member of any of this package's registries.
    """
    names = registered_names()
    top = names if registry is None else registered_names(registry)
    _walk(cfg, names, top, source, key)


def check_overrides(options: Mapping[str, Any], source: str,
                    key: str) -> None:
    """:func:`check_buildable` for dotted-key overrides read from a file
    (``{'model.encoder.type': ..., 'model.decoder': {...}}``): a key ending
    in ``type`` / ``_scope_`` / ``model_name`` is checked as that entry."""
    if not isinstance(options, Mapping):
        raise _refuse(source, key, f'{type(options).__name__} is not an '
                      'object of dotted keys')
    names = registered_names()
    for dotted, value in options.items():
        if not isinstance(dotted, str):
            raise _refuse(source, key, f'key {dotted!r} is not a string')
        leaf = dotted.rsplit('.', 1)[-1]
        where = f'{key}.{dotted}'
        if leaf in (TYPE_KEY, SCOPE_KEY, TIMM_NAME_KEY):
            _walk({leaf: value}, names, names, source,
                  where[:-len(leaf) - 1])
        else:
            _walk(value, names, names, source, where)


def iter_key_paths(cfg: Any, key: str) -> Iterable[Tuple[str, Any]]:
    """Every ``(key path, value)`` of a nested config (for checks of named
    entries, e.g. file paths)."""
    if isinstance(cfg, Mapping):
        for k, v in cfg.items():
            yield from iter_key_paths(v, f'{key}.{k}')
    elif isinstance(cfg, (list, tuple)):
        for i, v in enumerate(cfg):
            yield from iter_key_paths(v, f'{key}[{i}]')
    yield key, cfg
