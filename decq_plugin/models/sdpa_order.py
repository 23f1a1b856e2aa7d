"""Which ``F.scaled_dot_product_attention`` kernel a model's attention tries
first.

PyTorch picks an SDPA kernel per call from a priority order. At DiT-DH-XL's
DecQ shape (264 tokens: 256 patches + 8 queries, head dim 72, bf16) its
default order picks the flash kernels, while cuDNN's are about 1.6x faster
there in isolation and the DecQ train step is 2.3% faster with cuDNN first
(one H200, torch 2.11: docs/benchmarks.md, "Fused kernels, FP8, DecQ
attention, memory"). So :class:`~decq_plugin.models.diffusion.DiTDH` puts
cuDNN first by default; other models keep PyTorch's order.

The order is entered around each SDPA call (not around the whole model), so
a block recomputed in the backward (``grad_checkpoint``,
``recompute_fused``) runs the kernel its forward ran, and
``torch.compile`` traces it with the kernel it will run. A backend that
cannot take a call (CPU tensors, a head dim it lacks) is skipped for the next
one in the order, as in PyTorch's own selection.
"""
import contextlib
from typing import ContextManager, Optional, Sequence, Tuple, Union

#: Names accepted in an order, as PyTorch's ``SDPBackend`` members.
SDPA_BACKENDS = dict(cudnn='CUDNN_ATTENTION', flash='FLASH_ATTENTION',
                     efficient='EFFICIENT_ATTENTION', math='MATH')

#: DiT-DH's default: cuDNN first, then PyTorch's usual order.
CUDNN_FIRST = ('cudnn', 'flash', 'efficient', 'math')


def resolve_order(order: Union[None, bool, str, Sequence[str]]
                  ) -> Optional[Tuple[str, ...]]:
    """A config's ``attention_backends`` -> a tuple of backend names, or
    None for PyTorch's own choice.

    Accepts None / False / ``'torch'`` (PyTorch's order), True (cuDNN first:
    :data:`CUDNN_FIRST`), one name (that backend first, the rest in
    :data:`CUDNN_FIRST`'s order) or a sequence of names (exactly those
    backends, in that order; ``'math'`` is appended so every call has a
    kernel).
    """
    if order is None or order is False or order == 'torch':
        return None
    if order is True:
        return CUDNN_FIRST
    names = (order, ) if isinstance(order, str) else tuple(order)
    unknown = [n for n in names if n not in SDPA_BACKENDS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(
            f'attention_backends={order!r}: give names from '
            f'{", ".join(SDPA_BACKENDS)} (each once), True for cuDNN first, '
            f"or None / 'torch' for PyTorch's own order")
    if isinstance(order, str):
        names += tuple(n for n in CUDNN_FIRST if n != order)
    elif 'math' not in names:
        names += ('math', )
    return names


def sdpa_order(order: Optional[Sequence[str]]) -> ContextManager:
    """A context in which SDPA tries the backends of ``order`` (resolved
    names) in that order; ``None``: no change."""
    if order is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([getattr(SDPBackend, SDPA_BACKENDS[n]) for n in order],
                       set_priority=True)
