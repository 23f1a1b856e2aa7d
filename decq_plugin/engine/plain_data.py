"""Plain-data form of MMEngine checkpoint contents.

``torch.load(weights_only=True)`` with no allowed globals reads tensors,
containers and Python scalars only. :func:`make_checkpoint_safe` rewrites a
checkpoint into that form before it is saved (each ``HistoryBuffer`` and
numpy value becomes a tagged dict; callables are dropped, logged), and
:func:`decode_plain` rebuilds the objects after loading.
"""
from collections import OrderedDict
from typing import Any, Dict, List, Mapping

import numpy as np
import torch
import torch.nn as nn
from mmengine.logging import HistoryBuffer

from .checkpoint_errors import CheckpointFormatError

_TAG = '__decq_type__'
_DROP = object()
_ATOMS = (type(None), bool, int, float, complex, str, bytes, bytearray,
          torch.dtype, torch.device, torch.Size)
_TENSOR_TYPES = (torch.Tensor, nn.Parameter)
_ARRAY_KINDS = 'biufcUSO'  # numpy dtype kinds that round-trip


def _encode_array(arr: np.ndarray, path: str, dropped: List[str]) -> Any:
    if arr.dtype.kind not in _ARRAY_KINDS or arr.dtype.fields is not None:
        dropped.append(f'{path}: numpy array of dtype {arr.dtype}')
        return _DROP
    out = dict(shape=list(arr.shape), dtype=arr.dtype.str)
    out[_TAG] = 'ndarray'
    if arr.dtype.kind in 'biufc':
        try:
            out['data'] = torch.from_numpy(
                np.ascontiguousarray(arr).reshape(-1).copy())
            return out
        except (TypeError, ValueError, RuntimeError):
            pass  # e.g. a byte order torch lacks: store a list instead
    data = _encode(arr.reshape(-1).tolist(), path, dropped)
    out['data'] = data
    return out


def _encode_key(key: Any) -> Any:
    if isinstance(key, np.generic):
        key = key.item()
    if type(key) in _ATOMS or (type(key) is tuple
                               and all(type(k) in _ATOMS for k in key)):
        return key
    return _DROP


def _encode_mapping(obj: Mapping, path: str, dropped: List[str]) -> Any:
    changed = type(obj) not in (dict, OrderedDict)
    items = []
    for key, value in obj.items():
        sub = f'{path}[{key!r}]'
        new_key = _encode_key(key)
        new_value = _DROP if new_key is _DROP else _encode(value, sub, dropped)
        if new_key is _DROP or new_value is _DROP:
            if new_key is _DROP:
                dropped.append(f'{sub}: key of type {type(key).__name__}')
            changed = True
            continue
        changed = changed or new_key is not key or new_value is not value
        items.append((new_key, new_value))
    attrs = vars(obj) if isinstance(obj, OrderedDict) else {}
    new_attrs = {
        k: _encode(v, f'{path}.{k}', dropped)
        for k, v in attrs.items()
    }
    new_attrs = {k: v for k, v in new_attrs.items() if v is not _DROP}
    changed = changed or any(new_attrs.get(k) is not v
                             for k, v in attrs.items())
    if not changed:
        return obj
    new = OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    for k, v in new_attrs.items():
        setattr(new, k, v)
    return new


def _encode(obj: Any, path: str, dropped: List[str]) -> Any:
    """Return ``obj`` as data ``torch.load(weights_only=True)`` accepts with
    no allow-listed globals; ``_DROP`` for what cannot be kept."""
    if type(obj) in _TENSOR_TYPES or type(obj) in _ATOMS:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.as_subclass(torch.Tensor)
    if isinstance(obj, HistoryBuffer):
        logs, counts = obj.data
        out = {
            _TAG: 'HistoryBuffer',
            'max_length': int(obj.max_length),
            'log_history': _encode_array(logs, path, dropped),
            'count_history': _encode_array(counts, path, dropped)
        }
        return _DROP if any(v is _DROP for v in out.values()) else out
    if isinstance(obj, np.ndarray):
        return _encode_array(obj, path, dropped)
    if isinstance(obj, np.generic):
        if obj.dtype.kind not in _ARRAY_KINDS:
            dropped.append(f'{path}: numpy scalar of dtype {obj.dtype}')
            return _DROP
        value = _encode(obj.item(), path, dropped)
        if value is _DROP:
            return _DROP
        return {_TAG: 'numpy_scalar', 'dtype': obj.dtype.str, 'value': value}
    if isinstance(obj, Mapping):
        return _encode_mapping(obj, path, dropped)
    if isinstance(obj, (list, tuple, set, frozenset)):
        kind = set if isinstance(obj, (set, frozenset)) else (
            tuple if isinstance(obj, tuple) else list)
        if kind is set:  # members must stay hashable: no tagged dicts
            obj = {v.item() if isinstance(v, np.generic) else v for v in obj}
        values = [_encode(v, f'{path}[{i}]', dropped)
                  for i, v in enumerate(obj)]
        if kind is set:
            values = [v for v in values if v is not _DROP]
        else:
            values = [None if v is _DROP else v for v in values]
        if type(obj) is kind and all(a is b for a, b in zip(values, obj)):
            return obj
        return kind(values)
    kind = 'callable' if callable(obj) else 'object'
    dropped.append(f'{path}: {kind} of type {type(obj).__qualname__}')
    return _DROP


def _decode_array(tagged: Mapping) -> np.ndarray:
    dtype = np.dtype(tagged['dtype'])
    if dtype.kind not in _ARRAY_KINDS:
        raise CheckpointFormatError(f'unsupported array dtype {dtype}')
    data = tagged['data']
    shape = tuple(int(s) for s in tagged['shape'])
    if isinstance(data, torch.Tensor):
        return data.cpu().numpy().astype(dtype, copy=False).reshape(shape)
    flat = np.empty(len(data), dtype=dtype)
    for i, value in enumerate(decode_plain(data)):
        flat[i] = value
    return flat.reshape(shape)


def decode_plain(obj: Any) -> Any:
    """Rebuild the tagged dicts written by :func:`_encode`."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        tag = obj.get(_TAG)
        if tag == 'ndarray':
            return _decode_array(obj)
        if tag == 'numpy_scalar':
            dtype = np.dtype(obj['dtype'])
            if dtype.kind not in _ARRAY_KINDS:
                raise CheckpointFormatError(f'unsupported dtype {dtype}')
            return np.array(decode_plain(obj['value']), dtype=dtype)[()]
        if tag == 'HistoryBuffer':
            return HistoryBuffer(
                _decode_array(obj['log_history']),
                _decode_array(obj['count_history']),
                max_length=int(obj['max_length']))
        new = {k: decode_plain(v) for k, v in obj.items()}
        if all(new[k] is v for k, v in obj.items()):
            return obj
        if not isinstance(obj, OrderedDict):
            return dict(new)
        out = OrderedDict(new)
        out.__dict__.update(vars(obj))
        return out
    if isinstance(obj, (list, tuple, set)):
        new_values = [decode_plain(v) for v in obj]
        if all(a is b for a, b in zip(new_values, obj)):
            return obj
        return type(obj)(new_values)
    return obj


def make_checkpoint_safe(checkpoint: Dict[str, Any]) -> List[str]:
    """Rewrite ``checkpoint`` in place into plain data; return what was
    dropped, one ``'path: what'`` line each."""
    dropped: List[str] = []
    for key in list(checkpoint):
        value = _encode(checkpoint[key], f'checkpoint[{key!r}]', dropped)
        if value is _DROP:
            del checkpoint[key]
        else:
            checkpoint[key] = value
    return dropped
