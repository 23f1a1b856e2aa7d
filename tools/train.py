"""Train a model from a config file.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--amp]
        [--auto-scale-lr] [--cfg-options KEY=VALUE ...]
        [--launcher {none,pytorch,slurm,mpi}]

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
from decq_plugin.utils import register_all_modules  # noqa: E402
from decq_plugin.utils.launch import (  # noqa: E402
    add_launcher_arguments, build_runner, check_file, enable_amp,
    export_local_rank, is_remote, load_config, resolve_work_dir)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description='Train a model')
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
        help='automatic mixed precision: every optim wrapper becomes an '
        'AmpOptimWrapper')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the actual batch size over '
        'auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. train_cfg.max_iters=10 '
        'model.decoder.depth=2 (lists: key="[a,b]")')
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
    if args.amp:
        enable_amp(cfg)
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
    try:
        cfg = merge_args(load_config(args.config, args.cfg_options), args)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f'train.py: error: {error}')
    if cfg.get('load_from') and not is_remote(cfg.load_from):
        # A missing load_from fails late inside the runner; say it now.
        try:
            check_file(cfg.load_from, 'load_from checkpoint')
        except FileNotFoundError as error:
            sys.exit(f'train.py: error: {error}')
    register_all_modules(init_default_scope=False)
    # --resume without a file: the newest *complete* checkpoint.
    resolve_auto_resume(cfg)
    runner = build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    main()
