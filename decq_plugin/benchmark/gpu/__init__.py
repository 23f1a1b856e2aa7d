"""GPU throughput benchmarks and profiles (``tools/analysis/benchmark_gpu.py``,
``profile_gpu.py`` and ``gpu_smoke.py`` are command lines over these):
run sizes (:mod:`.plan`), device timing (:mod:`.timing`), the hand-written
DiT-DH step (:mod:`.dit_step`) and its variants (:mod:`.dit_variants`),
SDPA backends (:mod:`.attention_backends`), the stage-1 step's phases
(:mod:`.stage1_phases`), profiler tables (:mod:`.kernel_profile`),
synthetic data (:mod:`.synthetic_data`), runs of the real tools
(:mod:`.tool_runs`, :mod:`.sample_worker`), the bf16-vs-TF32 loss curves
(:mod:`.bf16_stability`), reports (:mod:`.report`) and whole runs
(:mod:`.benchmark`, :mod:`.profiling`)."""
from .benchmark import run_benchmark
from .bf16_stability import run_stability
from .plan import ROOT, Plan, init_scope
from .profiling import run_profile
from .synthetic_data import latent_shapes, write_jpegs, write_latent_shards
from .timing import env_info, peak_gib, sync, timed
from .tool_runs import parse_train_log, run_sample_tool, run_train_tool

__all__ = [
    'Plan', 'ROOT', 'env_info', 'init_scope', 'latent_shapes',
    'parse_train_log', 'peak_gib', 'run_benchmark', 'run_profile',
    'run_sample_tool', 'run_stability', 'run_train_tool', 'sync', 'timed',
    'write_jpegs', 'write_latent_shards'
]
