"""Shared steps of ``tools/train.py`` and ``tools/test.py``: load a config
with clear errors, apply command-line overrides, build the runner."""
import inspect
import os.path as osp
import sys
from typing import Dict, List, Optional, Union

from mmengine.config import Config, ConfigDict

from decq_plugin.registry import SCOPE
from .config_check import check_top_level_keys
from .quiet_imports import import_pkg_resources_quietly
from .setup_env import register_config_package

# Optim wrapper types that ``--amp`` may switch to ``AmpOptimWrapper``.
SWITCHABLE_WRAPPERS = (None, 'OptimWrapper', 'AmpOptimWrapper')


def is_remote(path: str) -> bool:
    """Whether ``path`` names a remote file (``s3://``, ``https://`` ...)."""
    return '://' in path


def check_file(path: str, what: str) -> None:
    """Raise ``FileNotFoundError`` naming ``what`` when a local file is
    missing; remote paths are left to the loader."""
    if not is_remote(path) and not osp.isfile(path):
        raise FileNotFoundError(
            f'{what} not found: {path!r} (resolved to '
            f'{osp.abspath(path)!r})')


def unknown_keys(cfg: Config, options: Dict) -> List[str]:
    """Keys of ``--cfg-options`` that name nothing in ``cfg``.

    MMEngine adds such keys silently, so a typo (``trian_cfg.max_iters``)
    would change nothing; the caller warns about them. A top-level key that
    is an argument of ``Runner`` (``work_dir``, ``env_cfg`` ...) is known
    even when the config leaves it out.
    """
    from mmengine.runner import Runner
    runner_args = set(inspect.signature(Runner.__init__).parameters)
    tree = cfg.to_dict()
    missing = []
    for key in options:
        parts = key.split('.')
        if parts[0] not in tree:
            if parts[0] not in runner_args:
                missing.append(key)
            continue
        node = tree
        for part in parts:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif (isinstance(node, (list, tuple)) and part.isdigit()
                  and int(part) < len(node)):
                node = node[int(part)]
            else:
                missing.append(key)
                break
    return missing


def load_config(path: str, cfg_options: Optional[Dict] = None) -> Config:
    """Read a config file, merge ``cfg_options`` and select the scope.

    Args:
        path: config file; ``_base_`` may use ``'decq_plugin::...'``.
        cfg_options: dotted keys to override (``--cfg-options``); keys not in
            the config are added, with a warning.

    Returns:
        The config, with ``default_scope`` set to ``'decq_plugin'`` unless
        the file chose another.
    """
    check_file(path, 'config file')
    import_pkg_resources_quietly()
    register_config_package()
    cfg = Config.fromfile(path)
    if cfg_options:
        missing = unknown_keys(cfg, cfg_options)
        if missing:
            # On stderr, not through `warnings`: filters must not hide it.
            print(f'WARNING: --cfg-options keys not in {path}: {missing}; '
                  'they are added as new keys (check the spelling).',
                  file=sys.stderr)
        cfg.merge_from_dict(cfg_options)
    check_top_level_keys(cfg, path)
    cfg.setdefault('default_scope', SCOPE)
    return cfg


def resolve_work_dir(cfg: Config, work_dir: Optional[str],
                     config_path: str) -> str:
    """Pick the work dir: command line, else the config's ``work_dir``, else
    ``./work_dirs/<config file name without extension>``."""
    if work_dir is not None:
        return work_dir
    if cfg.get('work_dir') is not None:
        return cfg.work_dir
    name = osp.splitext(osp.basename(config_path))[0]
    return osp.join('./work_dirs', name)


def _switch_to_amp(wrapper: Union[Dict, ConfigDict], where: str) -> None:
    wrapper_type = wrapper.get('type')
    if wrapper_type not in SWITCHABLE_WRAPPERS:
        raise ValueError(
            f'--amp: {where}.type is {wrapper_type!r}; only OptimWrapper can '
            'be switched to AmpOptimWrapper. Set the type in the config.')
    wrapper['type'] = 'AmpOptimWrapper'


def enable_amp(cfg: Config) -> None:
    """Switch every optim wrapper of ``cfg`` to ``AmpOptimWrapper``.

    Handles one wrapper (``optim_wrapper=dict(optimizer=...)``) and several
    (``optim_wrapper=dict(constructor=..., generator=dict(optimizer=...),
    discriminator=dict(optimizer=...))``).
    """
    wrappers = cfg.get('optim_wrapper')
    if not isinstance(wrappers, dict):
        raise ValueError('--amp: the config has no optim_wrapper dict')
    if 'optimizer' in wrappers or 'type' in wrappers:
        _switch_to_amp(wrappers, 'optim_wrapper')
        return
    names = [
        name for name, value in wrappers.items() if isinstance(value, dict)
        and ('optimizer' in value or 'type' in value)
    ]
    if not names:
        raise ValueError(
            '--amp: optim_wrapper has neither an optimizer nor sub-wrappers '
            f'(keys: {sorted(wrappers)})')
    for name in names:
        _switch_to_amp(wrappers[name], f'optim_wrapper.{name}')


def build_runner(cfg: Config):
    """Build the runner named by ``cfg.runner_type`` (default ``Runner``)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def init_launcher(launcher: str) -> None:
    """Join the process group of ``launcher`` for a script outside the
    Runner (``'none'``: single process; gloo when no GPU is present)."""
    import torch
    from mmengine.dist import init_dist
    if launcher == 'none':
        return
    if launcher == 'pytorch' and not torch.cuda.is_available():
        torch.distributed.init_process_group('gloo')
    else:
        init_dist(launcher)


def add_launcher_arguments(parser) -> None:
    """``--launcher`` and ``--local_rank`` / ``--local-rank`` (passed by
    ``torch.distributed.launch``; torchrun sets ``LOCAL_RANK`` instead)."""
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def export_local_rank(args) -> None:
    """Make ``LOCAL_RANK`` hold ``args.local_rank`` unless torchrun set it."""
    import os
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
