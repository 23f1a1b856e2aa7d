"""Evaluate a checkpoint with a config's test loop.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.json]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]

The checkpoint is loaded through ``cfg.load_from``, i.e. by the checkpoint
loader the runtime config registers (weights only, no pickled code).
"""
import argparse
import json
import numbers
import os
import os.path as osp
import sys
from typing import Any, Dict, List, Optional

from mmengine.config import Config, DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from decq_plugin.engine.checkpoint import (  # noqa: E402
    CheckpointError, check_checkpoint_keys)
from decq_plugin.utils import register_all_modules  # noqa: E402
from decq_plugin.utils.cli import doc_summary  # noqa: E402
from decq_plugin.utils.config_check import \
    check_registered_types  # noqa: E402
from decq_plugin.utils.preflight import (TEST_PARTS,  # noqa: E402
                                         preflight_or_exit)
from decq_plugin.utils.launch import (  # noqa: E402
    add_launcher_arguments, build_runner, check_file, export_local_rank,
    load_config, resolve_work_dir)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='where logs go (default: the config\'s work_dir, else '
        './work_dirs/<config name>)')
    parser.add_argument(
        '--out', help='also write the metrics to this JSON file')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. test_dataloader.batch_size=4')
    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    export_local_rank(args)
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command-line arguments to ``cfg`` (in place), checking
    that the checkpoint exists before anything is built."""
    check_file(args.checkpoint, 'checkpoint')
    if args.out is not None and not args.out.endswith('.json'):
        raise ValueError(f'--out must be a .json file, got {args.out!r}')
    cfg.launcher = args.launcher
    cfg.work_dir = resolve_work_dir(cfg, args.work_dir, args.config)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    return cfg


def to_json(value: Any) -> Any:
    """Metric values (tensors, numpy scalars, nested dicts) as plain JSON."""
    if hasattr(value, 'tolist'):
        return value.tolist()
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)


def dump_metrics(metrics: Dict[str, Any], path: str) -> None:
    """Write ``metrics`` to ``path`` as JSON."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(to_json(metrics), f, indent=2, sort_keys=True)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    preflight_or_exit('test.py', args.config, args.cfg_options, TEST_PARTS,
                      {'checkpoint': args.checkpoint})
    try:
        cfg = merge_args(load_config(args.config, args.cfg_options), args)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f'test.py: error: {error}')
    register_all_modules(init_default_scope=False)
    try:
        check_registered_types(cfg, args.config)
    except ValueError as error:
        sys.exit(f'test.py: error: {error}')
    runner = build_runner(cfg)
    # A checkpoint of another model is an error here, not a partial load
    # with warnings (the runner's own load_from is not strict).
    try:
        check_checkpoint_keys(runner.model, args.checkpoint)
    except CheckpointError as error:
        sys.exit(f'test.py: error: {error}')
    metrics = runner.test()
    if args.out is not None and runner.rank == 0:
        dump_metrics(metrics, args.out)
        runner.logger.info(f'metrics written to {args.out}')


if __name__ == '__main__':
    main()
