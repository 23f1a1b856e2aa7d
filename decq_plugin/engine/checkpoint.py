"""Checkpoints that load without running code (MMEngine 0.10.7, torch >= 2.6).

A stock MMEngine checkpoint pickles ``HistoryBuffer`` objects, numpy values
and functions, so ``torch.load(weights_only=True)`` refuses it, and the usual
workarounds (``weights_only=False``, allow-listing ``builtins.getattr`` or the
real ``HistoryBuffer``) let a crafted file run code. Here instead:

* saving: :class:`SafeCheckpointHook` rewrites the checkpoint into plain data
  just before it is written: each ``HistoryBuffer`` and numpy value becomes a
  tagged dict of tensors/lists, callables (e.g. in scheduler state) are
  dropped;
* loading: every local path read by MMEngine (``resume``, ``load_from``,
  ``load_checkpoint``, ``init_cfg=dict(type='Pretrained')``) goes through
  :func:`safe_load_checkpoint`: ``torch.load(weights_only=True)`` with no
  allow-listed globals, then the tagged dicts are rebuilt into
  ``HistoryBuffer``/numpy objects for MMEngine's resume code.

Enable it in a config; ``configs/_base_/default_runtime.py`` does, as an extra
default hook (either form works; keep it when overriding ``default_hooks``)::

    default_hooks = dict(..., safe_checkpoint=dict(type='SafeCheckpointHook'))
    custom_hooks = [dict(type='SafeCheckpointHook')]  # or this

Tools that load weights without a runner use :func:`safe_load_checkpoint` and
:func:`load_model_weights`. Checkpoints saved by MMEngine *without* the hook
are refused with an :class:`UnsafeCheckpointError` naming the global needed.
"""
import logging
import os
import pickle
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

from decq_plugin.registry import HOOKS
from .checkpoint_errors import (CheckpointError, CheckpointFormatError,
                                CheckpointNotFoundError,
                                StateDictMismatchError, UnsafeCheckpointError)
from .plain_data import decode_plain, make_checkpoint_safe

MapLocation = Union[str, torch.device, None]

__all__ = [
    'CheckpointError', 'CheckpointFormatError', 'CheckpointNotFoundError',
    'StateDictMismatchError', 'UnsafeCheckpointError', 'SafeCheckpointHook',
    'check_checkpoint_keys', 'install_safe_loader', 'load_model_weights',
    'make_checkpoint_safe', 'safe_load_checkpoint'
]


# --------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------
def _not_found(path: str, expected: str) -> CheckpointNotFoundError:
    what = 'is a directory' if os.path.isdir(path) else 'does not exist'
    return CheckpointNotFoundError(
        f'checkpoint {path!r} {what} (resolved: {os.path.abspath(path)!r}). '
        f'Expected a file written by torch.save or an MMEngine runner '
        f'holding {expected}.')


def _refusal(path: str, err: pickle.UnpicklingError) -> UnsafeCheckpointError:
    text = str(err)
    found = re.search(r'GLOBAL ([\w.]+)', text)
    if found:
        name = found.group(1).rstrip('.')
        hint = ''
        if name.startswith(('mmengine.', 'numpy', 'builtins.getattr')):
            hint = (' It looks like an MMEngine checkpoint saved without '
                    'SafeCheckpointHook; such files hold HistoryBuffer/numpy '
                    'objects. Re-save it with the hook enabled, or have '
                    'someone who trusts the file re-save its state_dict '
                    'with torch.save.')
        return UnsafeCheckpointError(
            f'refusing to load {path!r}: unpickling it needs the global '
            f'{name!r}, and loading globals from a file could run code '
            f'(this loader uses torch.load(weights_only=True) with no '
            f'allow-listed globals).{hint}')
    detail = re.search(r'(Unsupported[^\n]*)', text)
    return UnsafeCheckpointError(
        f'refusing to load {path!r}: the weights-only unpickler rejected it '
        f'({detail.group(1) if detail else text.strip()[:200]}); it is not '
        'a plain torch checkpoint and loading it fully could run code.')


def safe_load_checkpoint(path: str,
                         map_location: MapLocation = 'cpu',
                         expected: str = "a dict with 'state_dict' (model "
                         'weights) or a plain state dict') -> Dict[str, Any]:
    """Load a checkpoint without running code and rebuild MMEngine objects.

    Args:
        path (str): Local file path (``~`` is expanded).
        map_location: As for :func:`torch.load`. Defaults to ``'cpu'``.
        expected (str): What the file should hold, used in the message when
            it is missing.

    Returns:
        dict: The checkpoint, ``HistoryBuffer``/numpy values rebuilt.

    Raises:
        CheckpointNotFoundError, CheckpointFormatError, UnsafeCheckpointError.
    """
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise _not_found(path, expected)
    allowed = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        checkpoint = torch.load(
            path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(path, err) from None
    except Exception as err:  # any other failure: not a torch checkpoint
        raise CheckpointFormatError(
            f'could not read {path!r} as a torch checkpoint '
            f'({type(err).__name__}: {err})') from err
    finally:
        if allowed:
            torch.serialization.add_safe_globals(allowed)
    if not isinstance(checkpoint, dict):
        raise CheckpointFormatError(
            f'{path!r} holds a {type(checkpoint).__name__}; expected a dict: '
            f'{expected}')
    try:
        return decode_plain(checkpoint)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise CheckpointFormatError(
            f'{path!r} has a malformed tagged entry ({type(err).__name__}: '
            f'{err})') from err


def data_only_meta(checkpoint: Dict[str, Any], path: str) -> None:
    """Keep MMEngine from turning checkpoint content into code or config.

    ``Runner.resume`` parses ``meta['config']`` as Python source
    (``Config.fromstring``) and re-seeds from ``meta['seed']``; a
    plain-data file could thus run code. MMEngine itself writes the config
    text as ``meta['cfg']`` (never parsed), so ``meta['config']`` is
    dropped, and a seed that is not an int is refused. The run's config
    always comes from the command line."""
    meta = checkpoint.get('meta')
    if not isinstance(meta, dict):
        return
    if 'config' in meta:
        meta.pop('config')
        print_log(f"{path}: ignored meta['config'] (checkpoint content is "
                  'never read as config or code)', logger='current',
                  level=logging.WARNING)
    seed = meta.get('seed')
    if seed is not None and type(seed) is not int:
        raise CheckpointFormatError(
            f"{path!r}: meta['seed'] must be an int, got "
            f'{type(seed).__name__}; the file was not written by an MMEngine '
            'runner')


def load_from_safe_local(filename: str,
                         map_location: MapLocation = None) -> Dict[str, Any]:
    """MMEngine ``CheckpointLoader`` backend for local paths (resume,
    ``load_from``, ``load_checkpoint``): plain data only, and nothing in
    ``meta`` that MMEngine would parse (:func:`data_only_meta`)."""
    checkpoint = safe_load_checkpoint(filename, map_location=map_location)
    data_only_meta(checkpoint, filename)
    return checkpoint


def install_safe_loader() -> None:
    """Make MMEngine read every local checkpoint through
    :func:`safe_load_checkpoint` (idempotent; process-wide)."""
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_safe_local, force=True)


# --------------------------------------------------------------------------
# Loading weights into a module (tools).
# --------------------------------------------------------------------------
def _pick_state_dict(checkpoint: Dict[str, Any], key: Optional[str],
                     path: str) -> Mapping[str, Any]:
    if key is not None:
        if key not in checkpoint:
            raise CheckpointFormatError(
                f'{path!r} has no entry {key!r}; its top-level keys are '
                f'{sorted(map(str, checkpoint))[:20]}')
        state = checkpoint[key]
    elif isinstance(checkpoint.get('state_dict'), Mapping):
        state = checkpoint['state_dict']
    else:
        state = checkpoint
    bad = [k for k, v in state.items()
           if not isinstance(v, torch.Tensor)] if isinstance(
               state, Mapping) else None
    if bad is None or (bad and len(bad) == len(state)):
        raise CheckpointFormatError(
            f'{path!r} does not hold a state dict at '
            f"{repr(key) if key is not None else 'the top level'}; its "
            f'top-level keys are {sorted(map(str, checkpoint))[:20]}; pass '
            '`key=` to choose the entry holding the weights')
    return state


def _suggest_prefix(found: List[str], wanted: List[str]) -> Optional[str]:
    """The key prefix whose removal makes most checkpoint keys fit."""
    wanted_set, votes = set(wanted), {}
    for key in found:
        parts = key.split('.')
        for i in range(1, len(parts)):
            if '.'.join(parts[i:]) in wanted_set:
                prefix = '.'.join(parts[:i])
                votes[prefix] = votes.get(prefix, 0) + 1
    if not votes:
        return None
    prefix, count = max(votes.items(), key=lambda kv: kv[1])
    return prefix if count >= max(1, len(wanted) // 2) else None


def _mismatch(module: nn.Module, path: str, found: List[str],
              wanted: List[str], missing: List[str], unexpected: List[str],
              shapes: List[str]) -> StateDictMismatchError:
    lines = [f'{path!r} does not fit {type(module).__name__}:']
    if missing:
        lines.append(f'{len(missing)} of {len(wanted)} module keys missing '
                     f'from the checkpoint, e.g. {missing[:5]}')
    if unexpected:
        lines.append(f'{len(unexpected)} of {len(found)} checkpoint keys '
                     f'unexpected, e.g. {unexpected[:5]}')
    if shapes:
        lines.append(f'{len(shapes)} shape mismatches, e.g. {shapes[:5]}')
    prefix = _suggest_prefix(found, wanted)
    if prefix is not None:
        lines.append(f'the checkpoint looks like it holds this module under '
                     f"a prefix: try prefix='{prefix}'")
    lines.append('the module was left unchanged')
    return StateDictMismatchError('\n  '.join(lines))


def check_state_fit(module: nn.Module, own: Dict[str, Any],
               state: Dict[str, Any], path: str,
               strict: bool) -> Tuple[List[str], List[str]]:
    """Raise :class:`StateDictMismatchError` unless ``state`` fits ``own``
    (the module's state dict); return the missing and unexpected keys."""
    found, wanted = list(state), list(own)
    missing = [k for k in wanted if k not in state]
    unexpected = [k for k in found if k not in own]
    shapes = [
        f'{k}: checkpoint {tuple(state[k].shape)} vs module '
        f'{tuple(own[k].shape)}' for k in found
        if k in own and isinstance(own[k], torch.Tensor)
        and isinstance(state[k], torch.Tensor)
        and state[k].shape != own[k].shape
    ]
    if shapes or (strict and (missing or unexpected)) or not (set(found)
                                                              & set(own)):
        raise _mismatch(module, path, found, wanted, missing, unexpected,
                        shapes)
    return missing, unexpected


def check_checkpoint_keys(model: nn.Module, path: str) -> None:
    """Raise a clear :class:`StateDictMismatchError` when the checkpoint's
    ``state_dict`` does not fit ``model`` exactly (model wrappers, also on
    submodules, are looked through as the runner does when it saves)."""
    from mmengine.runner.checkpoint import get_state_dict
    own = get_state_dict(model)
    checkpoint = safe_load_checkpoint(path)
    state = _pick_state_dict(checkpoint, None, path)
    check_state_fit(model, own, state, path, strict=True)


def load_model_weights(module: nn.Module,
                       path: str,
                       *,
                       key: Optional[str] = None,
                       prefix: str = '',
                       strict: bool = True) -> None:
    """Load weights into ``module`` from a checkpoint file, safely.

    Args:
        module (nn.Module): Receives the weights; unchanged on any error.
        path (str): Checkpoint file.
        key (str, optional): Entry holding the state dict. By default
            ``checkpoint['state_dict']`` (the EMA weights when ``EMAHook``
            was used) and otherwise the whole checkpoint.
        prefix (str): Only keys under ``prefix`` (e.g. ``'decoder'``) are
            used, with the prefix removed.
        strict (bool): Require the keys to match exactly. Shapes must always
            match.

    Raises:
        CheckpointNotFoundError, CheckpointFormatError, UnsafeCheckpointError,
        StateDictMismatchError.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f'module must be an nn.Module, got {type(module).__name__}')
    if not isinstance(prefix, str):
        raise TypeError(f'prefix must be a str, got {type(prefix).__name__}')
    own = module.state_dict()
    expected = (f'weights for {type(module).__name__} ({len(own)} entries, '
                f'e.g. {list(own)[:3]})')
    checkpoint = safe_load_checkpoint(path, expected=expected)
    state = _pick_state_dict(checkpoint, key, path)
    if prefix:
        head = prefix.rstrip('.') + '.'
        selected = {k[len(head):]: v for k, v in state.items()
                    if k.startswith(head)}
        if not selected:
            tops = sorted({k.split('.')[0] for k in state})
            raise StateDictMismatchError(
                f"{path!r} has no key under prefix={prefix!r}; its top-level "
                f'prefixes are {tops[:20]}; the module was left unchanged')
        state = selected
    missing, unexpected = check_state_fit(module, own, state, path, strict)
    module.load_state_dict(state, strict=strict)
    if missing or unexpected:
        print_log(
            f'load_model_weights({path!r}): {len(missing)} missing and '
            f'{len(unexpected)} unexpected keys ignored (strict=False)',
            logger='current', level=logging.WARNING)


# --------------------------------------------------------------------------
# The hook.
# --------------------------------------------------------------------------
@HOOKS.register_module()
class SafeCheckpointHook(Hook):
    """Write checkpoints as plain data and read them without running code.

    Building the hook installs :func:`safe_load_checkpoint` as MMEngine's
    local-file checkpoint loader (process-wide, idempotent), so ``resume``
    and ``load_from`` use it; :meth:`before_save_checkpoint` runs after the
    other hooks (``'LOWEST'`` priority, e.g. after ``EMAHook``) and rewrites
    the checkpoint with :func:`make_checkpoint_safe`.
    """

    priority = 'LOWEST'

    def __init__(self) -> None:
        install_safe_loader()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Turn ``checkpoint`` (in place) into weights-only-loadable data."""
        dropped = make_checkpoint_safe(checkpoint)
        expected = [d for d in dropped if d.startswith(
            "checkpoint['param_schedulers']") and ': callable' in d]
        others = [d for d in dropped if d not in expected]
        if expected:
            print_log(f'SafeCheckpointHook: dropped callables from scheduler '
                      f'state: {expected}', logger='current',
                      level=logging.DEBUG)
        if others:
            print_log(f'SafeCheckpointHook: not saved (not plain data): '
                      f'{others}', logger='current', level=logging.WARNING)
