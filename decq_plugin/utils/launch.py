"""Shared steps of ``tools/train.py`` and ``tools/test.py``: load a config
with clear errors, apply command-line overrides, build the runner."""
import inspect
import logging
import os.path as osp
import sys
from typing import Dict, List, Optional, Tuple, Union

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

from decq_plugin.registry import SCOPE
from .config_check import ALLOW_UNKNOWN_KEY, check_top_level_keys
from .constructor_check import check_constructor_keys, key_verdict
from .quiet_imports import import_pkg_resources_quietly
from .schedule import fit_schedule_to_max_epochs, schedule_length_option
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


def drop_function_scopes(cfg: Config) -> List[str]:
    """Remove the ``_scope_`` key from every dataloader's ``collate_fn``.

    MMEngine writes ``_scope_='<package>'`` into every dict with a ``type``
    of a config inherited as ``'<package>::path'``; the runner then passes
    the whole dict, ``_scope_`` included, as keyword arguments to the collate
    function (``default_collate() got an unexpected keyword argument
    '_scope_'``). Returns the names of the dataloaders changed.
    """
    changed = []
    for name, value in cfg.items():
        if not (name.endswith('dataloader') and isinstance(value, dict)):
            continue
        collate = value.get('collate_fn')
        if isinstance(collate, dict) and '_scope_' in collate:
            collate.pop('_scope_')
            changed.append(name)
    return changed


def load_config(path: str, cfg_options: Optional[Dict] = None) -> Config:
    """Read a config file, merge ``cfg_options`` and select the scope.

    Args:
        path: config file; ``_base_`` may use ``'decq_plugin::...'``.
        cfg_options: dotted keys to override (``--cfg-options``); keys not in
            the config are added, with a warning unless the class of their
            dict takes them. A new ``train_cfg.max_epochs`` moves the
            epoch-based schedulers' ends with it
            (:func:`~.schedule.fit_schedule_to_max_epochs`) unless
            ``param_scheduler`` keys are given too.

    Raises:
        FileNotFoundError: no config file at ``path``.
        ValueError: a misspelt top-level key
            (:func:`~.config_check.check_top_level_keys`) or a key that the
            class of its dict does not take
            (:func:`~.constructor_check.check_constructor_keys`); both are
            skipped with ``allow_unknown_keys = True``.

    Returns:
        The config, with ``default_scope`` set to ``'decq_plugin'`` unless
        the file chose another.
    """
    check_file(path, 'config file')
    import_pkg_resources_quietly()
    register_config_package()
    cfg = Config.fromfile(path)
    old_epochs = cfg.get('train_cfg', {}).get('max_epochs')
    if cfg_options:
        # A key the config leaves out but its class takes is no typo; one
        # its class refuses stops the run below (unless allowed).
        check_classes = not (cfg_options.get(ALLOW_UNKNOWN_KEY)
                             or cfg.get(ALLOW_UNKNOWN_KEY, False))
        missing = [key for key in unknown_keys(cfg, cfg_options)
                   if key_verdict(cfg, key) is None
                   or (key_verdict(cfg, key) is False and not check_classes)]
        if missing:
            # On stderr, not through `warnings`: filters must not hide it.
            print(f'WARNING: --cfg-options keys not in {path}: {missing}; '
                  'they are added as new keys (check the spelling).',
                  file=sys.stderr)
        cfg.merge_from_dict(cfg_options)
        if schedule_length_option(cfg_options) and isinstance(old_epochs,
                                                              int):
            changes = fit_schedule_to_max_epochs(cfg, old_epochs)
            if changes:
                print(f'train_cfg.max_epochs={cfg.train_cfg.max_epochs} '
                      f'(config: {old_epochs}): the schedule follows it: '
                      + '; '.join(changes), file=sys.stderr)
    check_top_level_keys(cfg, path)
    if not cfg.get(ALLOW_UNKNOWN_KEY, False):
        # Misspelt keys inside model / hook / loop ... dicts, before any of
        # them is built.
        check_constructor_keys(cfg, path)
    cfg.setdefault('default_scope', SCOPE)
    drop_function_scopes(cfg)
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


def prepare_cpu_distributed(cfg: Config) -> bool:
    """Let ``--launcher pytorch`` run on machines without a GPU.

    MMEngine's ``init_dist`` calls ``torch.cuda.set_device`` and its model
    wrappers pass ``device_ids=[LOCAL_RANK]``; both fail without CUDA. When
    ``cfg.launcher`` is ``'pytorch'`` and no GPU is visible, this joins a
    gloo process group itself (MMEngine then skips ``init_dist``), records
    ``env_cfg.dist_cfg.backend='gloo'`` and sets the wrapper's
    ``device_ids=None`` (CPU DDP).

    Returns:
        True when the CPU/gloo path was taken.
    """
    import torch
    import torch.distributed as dist
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return False
    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    dist_cfg = env_cfg.setdefault('dist_cfg', ConfigDict())
    dist_cfg['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        # What the runner builds when the config names no wrapper.
        cfg['model_wrapper_cfg'] = ConfigDict(
            type='MMDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        # Config stores a copy: edit the stored one.
        wrapper = cfg['model_wrapper_cfg']
    wrapper['device_ids'] = None
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    return True


#: The default hooks MMEngine itself knows; ``None`` brings its default.
_MMENGINE_DEFAULT_HOOKS = ('runtime_info', 'timer', 'sampler_seed', 'logger',
                           'param_scheduler', 'checkpoint')


def drop_disabled_hooks(cfg: Config) -> None:
    """Remove the project's default hooks set to None (e.g.
    ``--cfg-options default_hooks.non_finite=None``): MMEngine accepts None
    only for its own default hooks and fails on a bare assertion
    otherwise."""
    hooks = cfg.get('default_hooks') or {}
    for name in [n for n, h in hooks.items()
                 if h is None and n not in _MMENGINE_DEFAULT_HOOKS]:
        hooks.pop(name)
        print_log(f'default_hooks.{name}=None: that hook is off',
                  logger='current', level=logging.WARNING)


def build_runner(cfg: Config):
    """Build the runner named by ``cfg.runner_type`` (default: MMEngine's
    ``Runner`` with a short console, :mod:`decq_plugin.utils.quiet_logs`;
    the log file keeps the config, environment and hook order).

    Multi-process runs without a GPU use gloo
    (:func:`prepare_cpu_distributed`).
    """
    from mmengine.registry import RUNNERS

    from .quiet_logs import quiet_known_warnings, quiet_runner_class
    prepare_cpu_distributed(cfg)
    model = cfg.get('model')
    quiet_known_warnings(isinstance(model, dict) and
                         model.get('discriminator') is not None)
    drop_disabled_hooks(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return quiet_runner_class().from_cfg(cfg)


def validation_schedule_warning(cfg: Config) -> Optional[str]:
    """What a training run's validation schedule leaves out, or None.

    With a val loop configured (``val_dataloader``, ``val_cfg`` and
    ``val_evaluator`` all set):

    * ``train_cfg.val_begin`` past the run's length: the run never
      validates;
    * ``train_cfg.val_interval`` larger than ``max_epochs`` (``max_iters``
      for iteration-based loops): it is never reached; MMEngine's loops
      then validate only once, after the last epoch (iteration).
    """
    if any(cfg.get(key) is None
           for key in ('val_dataloader', 'val_cfg', 'val_evaluator')):
        return None
    train_cfg = cfg.get('train_cfg') or {}
    for key, unit, default_interval in (('max_epochs', 'epoch', 1),
                                        ('max_iters', 'iteration', 1000)):
        if key in train_cfg:
            break
    else:
        return None
    length = train_cfg[key]
    interval = train_cfg.get('val_interval', default_interval)
    begin = train_cfg.get('val_begin', 1)
    if not all(isinstance(v, int) for v in (length, interval, begin)):
        return None
    if begin > length:
        return (f'train_cfg.val_begin={begin} > train_cfg.{key}={length} '
                f'(val_interval={interval}): this run never validates')
    if interval > length:
        return (f'train_cfg.val_interval={interval} > train_cfg.{key}='
                f'{length}: the interval is never reached; the run '
                f'validates only once, after its last {unit} ({length})')
    return None


def warn_about_validation_schedule(cfg: Config) -> None:
    """Log :func:`validation_schedule_warning` (a WARNING) when there is
    one; the run itself is not changed."""
    message = validation_schedule_warning(cfg)
    if message:
        print_log(message, logger='current', level=logging.WARNING)


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


# -- numeric precision -------------------------------------------------------
#: What ``precision`` (config key) and ``--precision`` accept.
PRECISIONS = ('fp32', 'tf32', 'bf16', 'fp16', 'fp8')
#: ``--amp-dtype`` spellings -> precision.
AMP_DTYPES = {'bfloat16': 'bf16', 'float16': 'fp16'}


def accelerator_support() -> Dict[str, bool]:
    """``{'cuda': GPU present, 'bf16': it runs bf16 natively, 'fp8': it
    has float8 tensor cores}``."""
    import torch
    cuda = torch.cuda.is_available()
    return dict(cuda=cuda, bf16=cuda and torch.cuda.is_bf16_supported(
        including_emulation=False),
        fp8=cuda and torch.cuda.get_device_capability() >= (8, 9))


def resolve_precision(requested: str,
                      support: Optional[Dict[str, bool]] = None) -> str:
    """The precision a run gets on this machine for ``requested``.

    * CPU (no CUDA): always ``'fp32'``. Autocast on the CPU is slower than
      float32 on most processors and the CPU runs are functional checks, so
      mixed precision is not emulated there.
    * GPU: ``'bf16'`` falls back to ``'fp16'`` (with loss scaling) on GPUs
      without native bf16 (before Ampere); ``'fp8'`` needs float8 tensor
      cores (compute capability 8.9: Ada, Hopper and later) and is refused
      on older GPUs; the others are kept.

    Args:
        requested: one of :data:`PRECISIONS`.
        support: :func:`accelerator_support` (computed when None).
    """
    if requested not in PRECISIONS:
        raise ValueError(
            f'precision must be one of {PRECISIONS}, got {requested!r}')
    support = accelerator_support() if support is None else support
    if not support['cuda']:
        return 'fp32'
    if requested == 'bf16' and not support['bf16']:
        return 'fp16'
    if requested == 'fp8' and not support.get('fp8', False):
        raise ValueError('precision fp8 needs a GPU with float8 tensor cores '
                         '(compute capability 8.9 or newer); use bf16')
    return requested


def precision_wrapper_fields(precision: str) -> Dict:
    """Optim-wrapper fields for ``precision``: plain ``OptimWrapper`` for
    fp32/tf32; ``AmpOptimWrapper`` autocasting to bfloat16 without loss
    scaling (bf16 has float32's range) or to float16 with dynamic loss
    scaling; fp8 autocasts to bfloat16 like bf16 (the float8 matmuls are
    the ``Float8TrainingHook``'s, see :func:`apply_precision`)."""
    if precision in ('fp32', 'tf32'):
        return dict(type='OptimWrapper')
    if precision in ('bf16', 'fp8'):
        return dict(type='AmpOptimWrapper', dtype='bfloat16',
                    loss_scale=dict(enabled=False))
    if precision == 'fp16':
        return dict(type='AmpOptimWrapper', dtype='float16',
                    loss_scale='dynamic')
    raise ValueError(f'precision must be one of {PRECISIONS}, got '
                     f'{precision!r}')


def _wrapper_entries(cfg: Config, flag: str) -> List[Tuple[str, Dict]]:
    """(name, dict) of each optim wrapper in ``cfg`` (one or several)."""
    wrappers = cfg.get('optim_wrapper')
    if not isinstance(wrappers, dict):
        raise ValueError(f'{flag}: the config has no optim_wrapper dict')
    if 'optimizer' in wrappers or 'type' in wrappers:
        return [('optim_wrapper', wrappers)]
    entries = [(f'optim_wrapper.{name}', value)
               for name, value in wrappers.items()
               if isinstance(value, dict) and ('optimizer' in value
                                               or 'type' in value)]
    if not entries:
        raise ValueError(
            f'{flag}: optim_wrapper has neither an optimizer nor '
            f'sub-wrappers (keys: {sorted(wrappers)})')
    return entries


def apply_precision(cfg: Config, precision: str) -> None:
    """Set every optim wrapper of ``cfg`` to run in ``precision`` (already
    resolved, see :func:`resolve_precision`) and record it as
    ``cfg.precision``. Only ``OptimWrapper``/``AmpOptimWrapper`` (or no
    type) can be switched; the mixed-precision fields (``dtype``,
    ``loss_scale``) of a wrapper are replaced."""
    fields = precision_wrapper_fields(precision)
    for where, wrapper in _wrapper_entries(cfg, f'precision={precision}'):
        if wrapper.get('type') not in SWITCHABLE_WRAPPERS:
            raise ValueError(
                f'precision={precision}: {where}.type is '
                f'{wrapper.get("type")!r}; only OptimWrapper and '
                'AmpOptimWrapper can be switched. Set the type in the config.')
        for key in ('dtype', 'loss_scale'):
            wrapper.pop(key, None)
        wrapper.update(fields)
    if precision == 'fp8':
        _add_float8_hook(cfg)
    cfg.precision = precision


#: The network each trainable model type trains (``precision='fp8'``).
FP8_TRAINED_MODULES = {'LatentDiffusionModel': ['denoiser'],
                       'AutoencoderModel': ['tokenizer.decoder']}


def _add_float8_hook(cfg: Config) -> None:
    """Append ``Float8TrainingHook`` for the model's trained network
    (once; see :mod:`decq_plugin.models.fp8` for the layers)."""
    model_type = cfg.get('model', {}).get('type')
    if model_type not in FP8_TRAINED_MODULES:
        raise ValueError(
            f'precision=fp8: model.type {model_type!r} has no float8 '
            f'training recipe (only {sorted(FP8_TRAINED_MODULES)}); use bf16')
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') == 'Float8TrainingHook' for h in hooks):
        hooks.append(dict(type='Float8TrainingHook',
                          modules=FP8_TRAINED_MODULES[model_type]))
    cfg.custom_hooks = hooks


def set_matmul_precision(precision: str) -> None:
    """Process-wide float32 matmul/convolution mode: TF32 tensor cores for
    'tf32', 'bf16' and 'fp16' (the float32 ops that autocast leaves), full
    float32 for 'fp32'. No effect on the CPU."""
    import torch
    fast = precision != 'fp32'
    torch.backends.cuda.matmul.allow_tf32 = fast
    torch.backends.cudnn.allow_tf32 = fast


def choose_precision(cfg: Config, amp: bool = False,
                     amp_dtype: str = 'bfloat16',
                     precision: Optional[str] = None,
                     support: Optional[Dict[str, bool]] = None
                     ) -> Optional[str]:
    """What a training run asks for: ``--precision``, else ``--amp``
    (``--amp-dtype``), else the config's ``precision`` key, resolved for
    this machine (:func:`resolve_precision`). None when nothing asks for a
    precision (the config's optim wrappers are then left as they are)."""
    if precision is None and amp:
        if amp_dtype not in AMP_DTYPES:
            raise ValueError(f'--amp-dtype must be one of '
                             f'{sorted(AMP_DTYPES)}, got {amp_dtype!r}')
        precision = AMP_DTYPES[amp_dtype]
    if precision is None:
        precision = cfg.get('precision')
    if precision is None:
        return None
    if precision == 'fp8':  # refused on any machine without torchao
        from decq_plugin.models.fp8 import require_torchao
        require_torchao()
    resolved = resolve_precision(precision, support)
    if resolved != precision:
        from mmengine.logging import print_log
        print_log(f'precision {precision!r} runs as {resolved!r} on this '
                  'machine (CPU: float32; GPU without bf16: fp16)',
                  logger='current')
    return resolved


# -- compiled model regions --------------------------------------------------
def move_compile_to_model(cfg: Config, force: bool = False) -> None:
    """Compile model regions instead of MMEngine's ``train_step``.

    A top-level ``compile`` (``--cfg-options compile=True`` or a dict of
    ``torch.compile`` arguments) would make the Runner compile its whole
    ``train_step``, which fails in dynamo (MMEngine's autocast checks the
    torch version inside the traced code). It becomes ``model.compile``,
    which the project's models apply to their heavy regions (see
    ``decq_plugin.models.compile_regions``); ``force`` (``--compile``)
    switches it on with the model's default regions when the config has
    none, or sets ``enabled=True`` in the config's own ``model.compile``
    (a recipe's ``compile=dict(enabled=False, memory_budget=0.8)`` says how
    to compile when asked).
    """
    top = cfg.get('compile', False)
    if top:
        cfg.compile = False
        model = cfg.get('model')
        if isinstance(model, dict):
            _switch_on_compile(model, top if isinstance(top, dict) else True)
    if force:
        model = cfg.get('model')
        if not isinstance(model, dict):
            raise ValueError('--compile: the config has no model dict')
        _switch_on_compile(model, True)


def _switch_on_compile(model: dict, spec) -> None:
    """Turn ``model.compile`` on: a config's own dict keeps its keys
    (``enabled=False`` becomes True), an empty one becomes ``spec``."""
    own = model.get('compile')
    if isinstance(own, dict) and own.get('enabled', True) is False:
        own['enabled'] = True
    elif not own:
        model['compile'] = spec
