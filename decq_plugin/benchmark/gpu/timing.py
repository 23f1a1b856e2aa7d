"""Timing on a device: synchronise, median of timed calls, peak memory,
and what a result was measured with."""
import datetime
import shlex
import time
from typing import List, Optional

import torch


def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def timed(fn, device: str, iters: int, warmup: int = 2) -> float:
    """Median seconds of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def peak_gib(device: str) -> Optional[float]:
    """Peak allocated GiB on CUDA since the last reset (else ``None``)."""
    if device != 'cuda':
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 1)


def env_info(argv: List[str],
             script: str = 'tools/analysis/benchmark_gpu.py') -> dict:
    """The command (``python SCRIPT ARGV``), date, torch, GPU and CUDA."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() \
        else 'cpu'
    return dict(command=' '.join(shlex.quote(a) for a in
                                 ['python', script, *argv]),
                date=datetime.datetime.now().isoformat(timespec='seconds'),
                torch=torch.__version__, gpu=gpu,
                cuda=torch.version.cuda)
