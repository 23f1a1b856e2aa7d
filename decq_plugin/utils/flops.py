"""Parameter and FLOP counts of the pipeline's parts, on the meta device.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which
counts matrix products, convolutions and scaled-dot-product attention (one
multiply-add = 2 FLOPs). Building on the meta device allocates nothing, so
full-size models are counted in seconds on any machine. Torch has no FLOP
formula for its CPU attention kernel; :func:`count_cpu_attention` lends it
the CUDA kernels' one, so CPU counts include attention too.
"""
import contextlib
from typing import Callable, Dict, Iterator, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@contextlib.contextmanager
def count_cpu_attention() -> Iterator[None]:
    """While active, ``FlopCounterMode`` counts torch's CPU attention kernel
    (``_scaled_dot_product_flash_attention_for_cpu``) with the formula of
    the CUDA kernels; torch has none for it, so CPU counts would leave
    attention out. The formula table is restored on exit."""
    from torch.utils import flop_counter
    aten = torch.ops.aten
    registry = flop_counter.flop_registry
    cpu_op = getattr(aten, '_scaled_dot_product_flash_attention_for_cpu',
                     None)
    if cpu_op is None or cpu_op in registry:
        yield
        return
    registry[cpu_op] = registry[aten._scaled_dot_product_flash_attention]
    try:
        yield
    finally:
        registry.pop(cpu_op, None)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (attention counted on any device)."""
    with count_cpu_attention(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def count_params(module: Optional[nn.Module]) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def tokenizer_costs(tokenizer: nn.Module, batch: int = 1) -> Dict[str, int]:
    """Per-image params and FLOPs of a tokenizer's parts.

    Keys: ``encoder_params``, ``condenser_params``, ``decoder_params``,
    ``encoder_flops`` (the VFM alone), ``condenser_flops`` (what the
    condensers add to the VFM pass), ``decoder_flops``.
    """
    size = tokenizer.image_size
    device = next(tokenizer.parameters()).device
    images = torch.rand(batch, 3, size, size, device=device)
    vfm = count_flops(lambda: tokenizer.encoder(images))
    encode = count_flops(lambda: tokenizer.encode_raw(images))
    latents = {k: torch.zeros(batch, *s, device=device)
               for k, s in tokenizer.latent_shapes.items()}
    decode = count_flops(lambda: tokenizer.decode_raw(latents))
    extra = [m for name, m in tokenizer.named_children()
             if name not in ('encoder', 'decoder', 'normalizer', 'teacher')]
    return dict(
        encoder_params=count_params(tokenizer.encoder),
        condenser_params=sum(count_params(m) for m in extra),
        decoder_params=count_params(tokenizer.decoder),
        encoder_flops=vfm // batch,
        condenser_flops=(encode - vfm) // batch,
        decoder_flops=decode // batch,
    )


def denoiser_costs(denoiser: nn.Module, latent_shapes: Dict[str, tuple],
                   batch: int = 1) -> Dict[str, int]:
    """Per-image params and FLOPs of one denoiser evaluation (``dit_flops``)
    and of a training step's forward + backward (``dit_train_flops``)."""
    device = next(denoiser.parameters()).device
    x = {k: torch.zeros(batch, *s, device=device)
         for k, s in latent_shapes.items()}
    t = torch.full((batch, ), 0.5, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    fwd = count_flops(lambda: denoiser(x, t, y))

    def train_step():
        out = denoiser(x, t, y)
        sum(v.float().square().mean() for v in out.values()).backward()

    train = count_flops(train_step)
    denoiser.zero_grad(set_to_none=True)
    return dict(dit_params=count_params(denoiser), dit_flops=fwd // batch,
                dit_train_flops=train // batch)
