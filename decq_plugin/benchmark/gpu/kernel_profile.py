"""Where device time goes: ``torch.profiler`` tables of a step function,
per kernel class (GEMM, attention, fused elementwise, optimizer, ...)."""
from collections import defaultdict
from typing import Callable, Dict

import torch

from .timing import sync

#: (class, substrings of a kernel name), first match wins.
KERNEL_CLASSES = (
    ('communication', ('nccl', 'allreduce')),
    ('attention', ('flash', 'fmha', 'attention', 'attn', 'sdpa', 'mha')),
    ('optimizer', ('adam', 'multi_tensor', 'foreach')),
    ('conv', ('conv', 'implicit', 'winograd', 'dgrad', 'wgrad', 'cudnn')),
    ('gemm', ('gemm', 'nvjet', 'xmma', 'cutlass', 'cublas', 'matmul',
              'addmm', 'mm_', 'sm90_', 'sm80_')),
    ('fused reduction (triton)', ('triton_red', 'triton_per')),
    ('fused pointwise (triton)', ('triton_poi', 'triton_')),
    ('norm (eager)', ('norm',)),
    ('copy / cast', ('copy', 'cast', 'cat', 'transpose', 'permute')),
    ('eager elementwise / reduce', ('elementwise', 'reduce', 'vectorized',
                                    'unrolled')),
)


def kernel_class(name: str) -> str:
    low = name.lower()
    for cls, keys in KERNEL_CLASSES:
        if any(k in low for k in keys):
            return cls
    return 'other'


def kernel_table(prof, steps: int, top: int = 25) -> dict:
    """Per-step device time by kernel class and the heaviest kernels, from a
    ``torch.profiler`` run of ``steps`` steps (CPU ops in a dry run)."""
    kind = torch.autograd.DeviceType.CUDA
    cuda = any(getattr(e, 'device_type', None) == kind for e in prof.events())
    by_class: Dict[str, float] = defaultdict(float)
    kernels = []
    for evt in prof.key_averages():
        if cuda:
            if evt.device_type != kind:
                continue
            us = getattr(evt, 'self_device_time_total', None)
            if us is None:
                us = evt.self_cuda_time_total
        else:
            if evt.key.startswith('ProfilerStep'):
                continue
            us = evt.self_cpu_time_total
        if us <= 0:
            continue
        ms = us / 1e3 / steps
        by_class[kernel_class(evt.key)] += ms
        kernels.append((ms, evt.count // steps, evt.key[:110]))
    total = sum(by_class.values()) or 1.0
    kernels.sort(reverse=True)
    return dict(
        device='cuda' if cuda else 'cpu', total_ms=round(total, 2),
        classes={k: dict(ms=round(v, 2), share=round(v / total, 3))
                 for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])},
        top=[dict(ms=round(ms, 3), calls=n, name=name)
             for ms, n, name in kernels[:top]])


def profile_steps(step: Callable[[], None], steps: int) -> dict:
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        acts.append(ProfilerActivity.CUDA)
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        sync('cuda' if torch.cuda.is_available() else 'cpu')
    return kernel_table(prof, steps)
