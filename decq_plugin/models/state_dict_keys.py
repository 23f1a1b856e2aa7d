"""State-dict keys that do not depend on the distributed wrapper.

MMEngine's ``MMSeparateDistributedDataParallel`` (stage 1, one DDP per
trainable submodule) replaces each such child in place by a wrapper whose
own child is called ``module``, so ``model.state_dict()`` would name a weight
``tokenizer.module.decoder.w`` on N GPUs and ``tokenizer.decoder.w`` on one.
MMEngine's loader (``load_state_dict`` of ``mmengine.runner.checkpoint``)
and every tool of the project expect the second form. Models that can be
wrapped that way register :func:`drop_wrapper_segments` as a state-dict hook
(:func:`use_wrapper_free_keys`), so their checkpoints carry the same keys
whatever the wrapper and the number of processes.
"""
from typing import Iterable, Set

from mmengine.model import is_model_wrapper
from torch import nn


def strip_wrappers(name: str, wrappers: Iterable[str]) -> str:
    """``'tokenizer.module.decoder.w'`` -> ``'tokenizer.decoder.w'`` when
    ``'tokenizer'`` is in ``wrappers`` (names of model-wrapper modules, whose
    wrapped child is called ``module``)."""
    wrappers = set(wrappers)
    parts = name.split('.')
    kept = [part for i, part in enumerate(parts)
            if not (part == 'module' and '.'.join(parts[:i]) in wrappers)]
    return '.'.join(kept)


def wrapper_names(module: nn.Module) -> Set[str]:
    """Names (relative to ``module``) of the model wrappers inside it."""
    return {name for name, child in module.named_modules()
            if name and is_model_wrapper(child)}


def drop_wrapper_segments(module: nn.Module, state_dict: dict, prefix: str,
                          local_metadata: dict) -> None:
    """State-dict hook: rename, in place, the keys under ``prefix`` so that
    they carry no ``.module`` of a wrapper inside ``module``.

    In place (returns None) because a parent module ignores what a child's
    ``state_dict`` returns. Keys keep their relative order.
    """
    wrappers = wrapper_names(module)
    if not wrappers:
        return None
    for key in [k for k in state_dict if k.startswith(prefix)]:
        value = state_dict.pop(key)
        state_dict[prefix + strip_wrappers(key[len(prefix):], wrappers)] = value
    return None


def use_wrapper_free_keys(module: nn.Module) -> None:
    """Register :func:`drop_wrapper_segments` on ``module``."""
    module._register_state_dict_hook(drop_wrapper_segments)
