"""Selective recomputation of the fused kernels' outputs.

    from decq_plugin.ops.recompute import selective_recompute
    context_fn = selective_recompute(('norm', 'swiglu'))
    y = torch.utils.checkpoint.checkpoint(block, x, ..., use_reentrant=False,
                                          context_fn=context_fn)

Inside such a checkpoint the backward pass keeps the outputs of the GEMMs,
of attention and of the fused ops *not* named, and recomputes everything
else: the named fused ops and the cheap elementwise steps between them.
Without it the fused ops' outputs are always stored, because Inductor's
partitioner cannot recompute a custom op on its own. Per DiT-DH block and
token (width ``D``, SwiGLU hidden ``F``): ``norm`` drops the two
normalised inputs of the qkv and MLP projections (``2 D``, in the autocast
dtype) and the residual stream the second norm writes (``D``); ``swiglu``
drops the MLP's hidden activation (``F``). Each costs one more
memory-bound kernel in the backward.
"""
import functools
from typing import Callable, Iterable, Optional, Tuple

import torch
from torch.utils.checkpoint import (CheckpointPolicy,
                                    create_selective_checkpoint_contexts)

#: The outputs that can be recomputed, by name: the op of
#: :mod:`decq_plugin.ops.fused` that computes them.
RECOMPUTABLE = {'norm': 'norm_modulate', 'swiglu': 'swiglu',
                'rope': 'rope_qkv'}
#: The fused kernels (``fused_block.FUSED_OPS`` names) that run each op.
PRODUCERS = {'norm': ('norm', 'add_norm'), 'swiglu': ('swiglu', ),
             'rope': ('rope', )}
#: What ``True`` names: the outputs whose recompute costs least per byte.
DEFAULT_RECOMPUTE = ('norm', 'swiglu')


def resolve_names(names, fused_ops: Iterable[str]) -> Tuple[str, ...]:
    """``True``/``False``/names -> the names, checked against
    ``RECOMPUTABLE`` and against the fused ops in use (an output of a step
    that does not run as a fused op cannot be recomputed this way)."""
    if names is True:
        names = DEFAULT_RECOMPUTE
    elif not names:
        return ()
    names = (names, ) if isinstance(names, str) else tuple(names)
    unknown = sorted(set(names) - set(RECOMPUTABLE))
    if unknown:
        raise ValueError(f'recompute: {unknown} unknown; known: '
                         f'{", ".join(RECOMPUTABLE)}')
    missing = sorted(n for n in names
                     if not set(PRODUCERS[n]) & set(fused_ops))
    if missing:
        raise ValueError(f'recompute: {missing} do not run as fused kernels '
                         f'here (fused: {sorted(fused_ops) or "none"}); '
                         'name them in fused_kernels too')
    return names


def _fused_ops(names: Iterable[str]) -> frozenset:
    from . import fused
    if fused.triton is None:  # the reference path: no fused ops run
        return frozenset()
    return frozenset(getattr(torch.ops.decq_plugin, RECOMPUTABLE[n]).default
                     for n in names)


def _kept_ops() -> frozenset:
    """GEMMs and attention: what the policy never recomputes."""
    aten = torch.ops.aten
    names = ('mm', 'addmm', 'bmm', 'baddbmm', '_scaled_mm',
             '_scaled_dot_product_flash_attention',
             '_scaled_dot_product_efficient_attention',
             '_scaled_dot_product_cudnn_attention',
             '_scaled_dot_product_flash_attention_for_cpu')
    return frozenset(getattr(aten, n).default for n in names
                     if hasattr(aten, n))


def recompute_policy(names: Iterable[str]) -> Callable:
    """The checkpoint policy: keep the outputs of GEMMs, attention and the
    fused ops not in ``names``; recompute the rest."""
    names = tuple(names)
    keep = _kept_ops() | _fused_ops(n for n in RECOMPUTABLE
                                    if n not in names)

    def policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
        if op in keep:
            return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return policy


def selective_recompute(names: Iterable[str]) -> Optional[Callable]:
    """A ``context_fn`` for ``torch.utils.checkpoint.checkpoint``
    (``use_reentrant=False``) recomputing the named fused ops' outputs."""
    names = tuple(names)
    if not names:
        return None
    return functools.partial(create_selective_checkpoint_contexts,
                             recompute_policy(names))
