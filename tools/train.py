"""Train a model from a config file.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--amp]
        [--amp-dtype {bfloat16,float16}]
        [--precision {fp32,tf32,bf16,fp16,fp8}] [--compile] [--auto-scale-lr]
        [--cfg-options KEY=VALUE ...]
        [--launcher {none,pytorch,slurm,mpi}]

Precision: ``--precision``, else ``--amp`` (bf16 autocast; fp16 with loss
scaling when ``--amp-dtype float16``), else the config's ``precision`` key;
``fp8`` is bf16 plus float8 matmuls in the trained network's large linears
(torchao: ``pip install -e ".[fp8]"``; layers in decq_plugin/models/fp8.py).
On a machine without CUDA every run is float32. ``--compile`` (or
``--cfg-options compile=True``) compiles the model's heavy regions (the
denoiser, the pixel decoder, the discriminator trunk), not the train step.

Nothing has to be imported by hand: the config's modules come from the
``decq_plugin`` scope.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import Config, DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from decq_plugin.engine.checkpoint_files import \
    resolve_auto_resume  # noqa: E402
from decq_plugin.engine.process_count import \
    ProcessCountChangeError  # noqa: E402
from decq_plugin.engine.finished_run import \
    finished_run_message  # noqa: E402
from decq_plugin.utils import register_all_modules  # noqa: E402
from decq_plugin.utils.cli import doc_summary  # noqa: E402
from decq_plugin.utils.config_check import \
    check_registered_types  # noqa: E402
from decq_plugin.utils.preflight import (TRAIN_PARTS,  # noqa: E402
                                         preflight_or_exit)
from decq_plugin.utils.launch import (  # noqa: E402
    PRECISIONS, add_launcher_arguments, apply_precision, build_runner,
    check_file, choose_precision, export_local_rank, is_remote, load_config,
    move_compile_to_model, resolve_work_dir, set_matmul_precision,
    warn_about_validation_schedule)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--work-dir',
        help='where logs and checkpoints go (default: the config\'s work_dir, '
        'else ./work_dirs/<config name>)')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or, with no value, from the '
        'latest checkpoint in the work dir')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision: bf16 autocast (no loss scaling) on GPUs '
        'that support it; see --amp-dtype')
    parser.add_argument(
        '--amp-dtype',
        choices=['bfloat16', 'float16'],
        default='bfloat16',
        help='autocast dtype of --amp (float16 adds dynamic loss scaling)')
    parser.add_argument(
        '--precision',
        choices=PRECISIONS,
        default=None,
        help="numeric precision (wins over --amp and the config's "
        '`precision`); fp8 = bf16 + float8 large linears (torchao); CPU '
        'runs are always fp32')
    parser.add_argument(
        '--compile',
        action='store_true',
        help="torch.compile the model's heavy regions (model.compile)")
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the actual batch size over '
        'auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. train_cfg.max_epochs=2 '
        'model.tokenizer.condenser.num_queries=4 (lists: '
        'model.tokenizer.condenser.layers="[0,3]")')
    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    export_local_rank(args)
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command-line flags to ``cfg`` (in place) and return it.

    ``--cfg-options`` are merged when the config is loaded, so the flags
    here win over them.
    """
    cfg.launcher = args.launcher
    cfg.work_dir = resolve_work_dir(cfg, args.work_dir, args.config)
    precision = choose_precision(cfg, args.amp, args.amp_dtype,
                                 args.precision)
    if precision is not None:
        apply_precision(cfg, precision)
    move_compile_to_model(cfg, force=args.compile)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        check_file(args.resume, '--resume checkpoint')
        cfg.resume = True
        cfg.load_from = args.resume
    if args.auto_scale_lr:
        scale = cfg.get('auto_scale_lr')
        if not isinstance(scale, dict) or 'base_batch_size' not in scale:
            raise ValueError(
                '--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=N) '
                'in the config')
        scale['enable'] = True
    return cfg


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    # Every missing file at once (data, weights, checkpoints), named by the
    # config key that sets it, before anything is built.
    resume_file = None if args.resume in (None, 'auto') else args.resume
    preflight_or_exit('train.py', args.config, args.cfg_options, TRAIN_PARTS,
                      {'--resume checkpoint': resume_file})
    try:
        cfg = merge_args(load_config(args.config, args.cfg_options), args)
    except (FileNotFoundError, ValueError, ImportError) as error:
        sys.exit(f'train.py: error: {error}')
    if cfg.get('load_from') and not is_remote(cfg.load_from):
        # A missing load_from fails late inside the runner; say it now.
        try:
            check_file(cfg.load_from, 'load_from checkpoint')
        except FileNotFoundError as error:
            sys.exit(f'train.py: error: {error}')
    register_all_modules(init_default_scope=False)
    try:
        check_registered_types(cfg, args.config)
    except ValueError as error:
        sys.exit(f'train.py: error: {error}')
    set_matmul_precision(cfg.get('precision', 'fp32'))
    # --resume without a file: the newest *complete* checkpoint.
    resolve_auto_resume(cfg)
    finished = finished_run_message(cfg, args.config)
    if finished:
        print(finished)
        return
    runner = build_runner(cfg)
    # In the run's log too: a schedule that (almost) never validates.
    warn_about_validation_schedule(cfg)
    try:
        runner.train()
    except ProcessCountChangeError as error:  # a --resume: say what to do
        sys.exit(f'train.py: error: {error}')


if __name__ == '__main__':
    main()
