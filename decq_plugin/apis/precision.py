"""Numeric precision and compilation for inference (sampling, decoding).

    model = build_model_from_config(cfg, ckpt, device='cuda')
    prepare_inference(model, compile=True)
    with inference_precision(default_inference_precision('cuda'), 'cuda'):
        images = model.sample(labels)

``'bf16'`` autocasts the networks to bfloat16 (the ODE state, the guidance
combination and the time grid stay float32); ``'tf32'`` runs float32 with
TF32 tensor-core matmuls; ``'fp32'`` is full float32.
"""
from contextlib import contextmanager
from typing import Iterator, List, Union

import torch
from torch import nn

from decq_plugin.models.compile_regions import compile_regions

INFERENCE_PRECISIONS = ('fp32', 'tf32', 'bf16')


def _device_type(device: Union[str, torch.device]) -> str:
    return torch.device(device).type


def default_inference_precision(device: Union[str, torch.device]) -> str:
    """'bf16' on a GPU with native bf16, else 'fp32' (the CPU included)."""
    if _device_type(device) == 'cuda' and torch.cuda.is_available() and \
            torch.cuda.is_bf16_supported(including_emulation=False):
        return 'bf16'
    return 'fp32'


@contextmanager
def inference_precision(precision: str,
                        device: Union[str, torch.device]) -> Iterator[None]:
    """Run the block in ``precision`` on ``device``'s type; the TF32 flags
    are restored on exit."""
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f'precision must be one of {INFERENCE_PRECISIONS}, '
                         f'got {precision!r}')
    kind = _device_type(device)
    flags = (torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    fast = precision != 'fp32'
    torch.backends.cuda.matmul.allow_tf32 = fast
    torch.backends.cudnn.allow_tf32 = fast
    try:
        with torch.autocast(kind, dtype=torch.bfloat16,
                            enabled=precision == 'bf16'):
            yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = flags


def prepare_inference(model: nn.Module,
                      compile: Union[bool, dict, None] = False) -> List[str]:
    """Compile ``model``'s heavy regions for inference (its
    ``default_compile_regions`` unless ``compile`` names them); returns the
    compiled module paths. ``False`` leaves the model eager."""
    defaults = getattr(model, 'default_compile_regions', ())
    if callable(defaults):
        defaults = defaults()
    return compile_regions(model, compile, defaults)
