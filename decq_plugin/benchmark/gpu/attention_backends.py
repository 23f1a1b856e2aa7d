"""SDPA forward and forward+backward per backend (flash, memory-efficient,
cuDNN) on the attention shapes the models use."""
import json
from typing import List

import torch

from .timing import timed


def bench_attention(dry: bool, batch2: int, batch1: int) -> List[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa
    dev = 'cpu' if dry else 'cuda'
    dtype = torch.float32 if dry else torch.bfloat16
    shapes = [('DiT body, RAE', batch2, 16, 256, 72),
              ('DiT body, DecQ', batch2, 16, 264, 72),
              ('DiT head', batch2, 16, 256, 128),
              ('CFG forward body (2 x batch)', 2 * batch2, 16, 264, 72),
              ('ViT-XL decoder', batch1, 16, 257, 72),
              ('DINO ViT-S/8 disc (2 x batch)', 2 * batch1, 6, 785, 64)]
    if dry:
        shapes = [(s[0], 2, 2, 16, 8) for s in shapes[:2]]
    backends = dict(flash=SDPBackend.FLASH_ATTENTION,
                    efficient=SDPBackend.EFFICIENT_ATTENTION,
                    cudnn=SDPBackend.CUDNN_ATTENTION)
    if dry:
        backends = dict(math=SDPBackend.MATH)
    rows = []
    for name, b, h, n, d in shapes:
        q, k, v = (torch.randn(b, h, n, d, device=dev, dtype=dtype,
                               requires_grad=True) for _ in range(3))
        grad = torch.randn(b, h, n, d, device=dev, dtype=dtype)
        flop = 4 * b * h * n * n * d
        row = dict(shape=name, b=b, h=h, n=n, d=d)
        for key, backend in backends.items():
            try:
                with sdpa_kernel([backend]):
                    fwd = timed(lambda: sdpa(q, k, v), dev,
                                      5 if not dry else 1)
                    both = timed(
                        lambda: torch.autograd.backward(sdpa(q, k, v), grad),
                        dev, 5 if not dry else 1)
                row[key] = dict(fwd_ms=round(fwd * 1e3, 3),
                                fwd_bwd_ms=round(both * 1e3, 3),
                                fwd_tflops=round(flop / fwd / 1e12, 1),
                                fwd_bwd_tflops=round(3.5 * flop / both / 1e12,
                                                     1))
            except RuntimeError as err:
                row[key] = dict(error=str(err).split('\n')[0][:160])
        rows.append(row)
        print('attention', json.dumps(row), flush=True)
    return rows
