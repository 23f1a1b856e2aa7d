"""Tokenizer benchmark: suites of (name, config, checkpoint) entries
evaluated on one dataset (PSNR, SSIM, rFID, LPIPS, encode/decode
throughput, parameters and FLOPs) with one resumable result per tokenizer,
and reports (Markdown, CSV, JSON, the rPSNR-gFID trade-off plot);
optionally every tokenizer is first trained with one shared short budget
(:mod:`.training`, ``--train``).

Entry point: ``tools/benchmark_tokenizers.py``. GPU throughput and
profiles (``tools/analysis/benchmark_gpu.py``, ``profile_gpu.py``) live in
the subpackage :mod:`.gpu`.
"""
from .report import (build_rows, markdown_table, read_generation_results,
                     tradeoff_plot, write_csv, write_reports)
from .runner import SuiteRunner
from .suite import (BenchmarkSuite, SuiteError, TokenizerEntry,
                    available_suites, load_suite, parse_suite)

__all__ = [
    'BenchmarkSuite', 'SuiteError', 'SuiteRunner', 'TokenizerEntry',
    'available_suites', 'build_rows', 'load_suite', 'markdown_table',
    'parse_suite', 'read_generation_results', 'tradeoff_plot', 'write_csv',
    'write_reports'
]
