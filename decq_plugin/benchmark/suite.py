"""Benchmark suites: which tokenizers to compare, on which images, how.

A suite is a JSON file (``configs/benchmark/<name>.json``)::

    {"name": "table3_paradigms",
     "title": "...",
     "dataset": {"type": "ImageNetDataset", "data_root": "data/imagenet",
                 "split": "val", "transform": {"type": "AdmCenterCrop",
                                               "size": 256}},
     "num_images": 50000,                 # null: the whole dataset
     "batch_size": 64,
     "metrics": ["psnr", "ssim", "rfid", "lpips"],
     "rfid": {"feature_extractor": null},  # null: FID Inception-v3
     "lpips": {"net": "vgg", "pretrained_trunk": true},
     "throughput": {"batch_size": 64, "warmup": 3, "repeats": 10},
     "train": {"dataset": {...}, "iters": 300,   # optional: the budget of
               "batch_size": 8, "lr": 1e-3,      # --train (see
               "seeds": [0, 1, 2]},              # benchmark/training.py)
     "tokenizers": [
        {"name": "RAE", "config": "configs/rae/....py",
         "checkpoint": "work_dirs/.../epoch_16.pth",   # null: random weights
         "cfg_options": {},                # optional, dotted keys
         "gfid": 2.16,                     # optional, for the trade-off plot
         "paper": {"rPSNR": 19.13},        # optional, the paper's numbers
         "full_size_config": "...",        # optional, see builtin.json
         "note": "..."}]}

Relative config paths are looked up from the working directory, then from
the folder holding ``configs/`` (so suites work from an installed copy);
checkpoints and data paths are relative to the working directory.

What a suite gives a registry (``dataset``, ``train.dataset``,
``rfid.feature_extractor``, each tokenizer's ``cfg_options``) may name only
members registered in ``decq_plugin``: a suite is refused on load, naming
the key, when it names anything else (a dotted ``type`` such as
``'os.system'`` would be imported and called; see
:mod:`decq_plugin.utils.safe_config`).
"""
import copy
import json
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from decq_plugin.registry import DATASETS, MODELS
from decq_plugin.utils.safe_config import (UnsafeConfigError,
                                           check_buildable, check_overrides)
from .training import TrainSettings

SUITE_DIR_NAME = osp.join('configs', 'benchmark')
METRIC_NAMES = ('psnr', 'ssim', 'rfid', 'lpips')
NO_CHECKPOINT = ('', 'none', 'null', 'random')

_SUITE_KEYS = {'name', 'title', 'description', 'paper_table', 'dataset',
               'num_images', 'batch_size', 'num_workers', 'metrics', 'rfid',
               'lpips', 'throughput', 'seed', 'autocast', 'tokenizers',
               'train'}
_ENTRY_KEYS = {'name', 'config', 'checkpoint', 'cfg_options', 'gfid',
               'paper', 'full_size_config', 'note'}
_THROUGHPUT_DEFAULTS = dict(batch_size=64, warmup=3, repeats=10)
_LPIPS_DEFAULTS = dict(net='vgg', pretrained_trunk=True,
                       trunk_weights_path=None)
AUTOCAST_CHOICES = ('none', 'bf16', 'fp16')


class SuiteError(ValueError):
    """A suite file or a command-line tokenizer list is malformed."""


@dataclass
class TokenizerEntry:
    """One tokenizer of a suite (paths as written; see :func:`resolve`)."""
    name: str
    config: str
    checkpoint: Optional[str] = None  # None: random weights
    cfg_options: Dict[str, object] = field(default_factory=dict)
    gfid: Optional[float] = None
    paper: Dict[str, object] = field(default_factory=dict)
    full_size_config: Optional[str] = None
    note: str = ''


@dataclass
class BenchmarkSuite:
    """Tokenizers and the shared evaluation settings of one comparison."""
    name: str
    dataset: dict
    tokenizers: List[TokenizerEntry]
    title: str = ''
    num_images: Optional[int] = None
    batch_size: int = 32
    num_workers: int = 0
    metrics: List[str] = field(default_factory=lambda: list(METRIC_NAMES))
    rfid: dict = field(default_factory=lambda: dict(feature_extractor=None))
    lpips: dict = field(default_factory=lambda: dict(_LPIPS_DEFAULTS))
    throughput: dict = field(
        default_factory=lambda: dict(_THROUGHPUT_DEFAULTS))
    seed: int = 0
    autocast: str = 'none'
    root: str = '.'  # the folder holding configs/, for config look-up
    # VFM weight file of the random-weight tokenizers (command line only)
    encoder_weights: Optional[str] = None
    path: Optional[str] = None
    # The suite's training budget ("train" block) and whether to use it.
    train_defaults: Optional[dict] = None
    train: Optional[TrainSettings] = None

    def enable_training(self, **overrides) -> TrainSettings:
        """Train every tokenizer before scoring it: the suite's ``train``
        block with ``overrides`` (``iters``, ``seeds`` ...) applied."""
        settings = dict(self.train_defaults or {})
        settings.update({k: v for k, v in overrides.items()
                         if v is not None})
        try:
            self.train = TrainSettings(**settings)
        except TypeError as err:
            raise SuiteError(f'train: {err}') from err
        except ValueError as err:
            raise SuiteError(str(err)) from err
        return self.train

    def data_settings(self) -> dict:
        """What the reconstruction numbers depend on besides the model."""
        out = dict(dataset=self.dataset, num_images=self.num_images,
                   metrics=sorted(self.metrics), rfid=self.rfid,
                   lpips=self.lpips, autocast=self.autocast)
        if self.train is not None:
            out['train'] = self.train.as_dict()
        return out


def package_root() -> str:
    """The folder holding ``configs/``: the source tree, or the installed
    ``decq_plugin/.mim``."""
    here = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    if osp.isdir(osp.join(here, SUITE_DIR_NAME)):
        return here
    return osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), '.mim')


def available_suites(root: Optional[str] = None) -> List[str]:
    """Names of the suites in ``<root>/configs/benchmark``."""
    folder = osp.join(root or package_root(), SUITE_DIR_NAME)
    if not osp.isdir(folder):
        return []
    return sorted(osp.splitext(n)[0] for n in os.listdir(folder)
                  if n.endswith('.json'))


def find_suite(name_or_path: str, root: Optional[str] = None) -> str:
    """A suite file path from a path or a suite name (``'builtin'``)."""
    if osp.isfile(name_or_path):
        return name_or_path
    root = root or package_root()
    path = osp.join(root, SUITE_DIR_NAME, f'{name_or_path}.json')
    if osp.isfile(path):
        return path
    raise FileNotFoundError(
        f'suite {name_or_path!r} is neither a file nor one of '
        f'{available_suites(root)} (in {osp.join(root, SUITE_DIR_NAME)})')


def _positive_int(value, what: str, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SuiteError(f'{what} must be a positive int, got {value!r}')
    return value


def parse_entry(raw: dict, where: str) -> TokenizerEntry:
    """A :class:`TokenizerEntry` from a suite's JSON object."""
    if not isinstance(raw, dict):
        raise SuiteError(f'{where}: a tokenizer must be an object, got '
                         f'{type(raw).__name__}')
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise SuiteError(f'{where}: unknown keys {unknown}; allowed: '
                         f'{sorted(_ENTRY_KEYS)}')
    for key in ('name', 'config'):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise SuiteError(f'{where}: {key!r} (a non-empty string) is '
                             'required')
    entry = TokenizerEntry(**copy.deepcopy(raw))
    entry.checkpoint = normalize_checkpoint(entry.checkpoint)
    if not isinstance(entry.cfg_options, dict):
        raise SuiteError(f'{where}: cfg_options must be an object of dotted '
                         'keys')
    if entry.gfid is not None and not isinstance(entry.gfid, (int, float)):
        raise SuiteError(f'{where}: gfid must be a number or null')
    return entry


def normalize_checkpoint(value: Optional[str]) -> Optional[str]:
    """None for 'none'/'null'/'random'/'' (random weights), else the path."""
    if value is None or str(value).strip().lower() in NO_CHECKPOINT:
        return None
    return str(value)


def parse_suite(raw: dict, root: str, path: Optional[str] = None
                ) -> BenchmarkSuite:
    """A :class:`BenchmarkSuite` from a suite's JSON object."""
    where = path or '<suite>'
    if not isinstance(raw, dict):
        raise SuiteError(f'{where}: a suite must be a JSON object')
    unknown = sorted(set(raw) - _SUITE_KEYS)
    if unknown:
        raise SuiteError(f'{where}: unknown keys {unknown}; allowed: '
                         f'{sorted(_SUITE_KEYS)}')
    for key in ('name', 'dataset', 'tokenizers'):
        if key not in raw:
            raise SuiteError(f'{where}: {key!r} is required')
    if not isinstance(raw['dataset'], dict) or 'type' not in raw['dataset']:
        raise SuiteError(f"{where}: 'dataset' must be a dataset config with "
                         "a 'type'")
    entries = [parse_entry(e, f'{where}: tokenizers[{i}]')
               for i, e in enumerate(raw['tokenizers'])]
    suite = BenchmarkSuite(
        name=raw['name'], dataset=copy.deepcopy(raw['dataset']),
        tokenizers=entries, title=raw.get('title', ''),
        num_images=_positive_int(raw.get('num_images'), 'num_images', True),
        batch_size=_positive_int(raw.get('batch_size', 32), 'batch_size'),
        num_workers=int(raw.get('num_workers', 0)),
        metrics=list(raw.get('metrics', METRIC_NAMES)),
        rfid={'feature_extractor': None, **raw.get('rfid', {})},
        lpips={**_LPIPS_DEFAULTS, **raw.get('lpips', {})},
        throughput={**_THROUGHPUT_DEFAULTS, **raw.get('throughput', {})},
        seed=int(raw.get('seed', 0)), autocast=raw.get('autocast', 'none'),
        root=root, path=path, train_defaults=raw.get('train'))
    if suite.train_defaults is not None:
        if not isinstance(suite.train_defaults, dict):
            raise SuiteError(f"{where}: 'train' must be an object")
        try:  # fail on load, not on use
            TrainSettings(**suite.train_defaults)
        except (TypeError, ValueError) as err:
            raise SuiteError(f'{where}: train: {err}') from err
    check_registry_content(raw, where)
    validate(suite)
    return suite


def check_registry_content(raw: dict, where: str) -> None:
    """Refuse (:class:`SuiteError`) a suite whose parts that reach a
    registry name anything not registered in ``decq_plugin``."""
    train = raw.get('train') or {}
    feature = (raw.get('rfid') or {}).get('feature_extractor')
    try:
        check_buildable(raw['dataset'], where, 'dataset', DATASETS)
        if isinstance(train, dict) and 'dataset' in train:
            check_buildable(train['dataset'], where, 'train.dataset',
                            DATASETS)
        if isinstance(feature, dict):
            check_buildable(feature, where, 'rfid.feature_extractor', MODELS)
        elif feature is not None:
            raise UnsafeConfigError(
                f'{where}: rfid.feature_extractor must be null or a config '
                f'object, got {type(feature).__name__}')
        for i, entry in enumerate(raw['tokenizers']):
            check_overrides(entry.get('cfg_options') or {}, where,
                            f'tokenizers[{i}].cfg_options')
    except UnsafeConfigError as err:
        raise SuiteError(str(err)) from None


def validate(suite: BenchmarkSuite) -> None:
    """Check the settings and that tokenizer names are unique."""
    if not suite.tokenizers:
        raise SuiteError(f'suite {suite.name!r} lists no tokenizers')
    names = [e.name for e in suite.tokenizers]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SuiteError(f'tokenizer names must be unique; repeated: '
                         f'{repeated}')
    bad = [m for m in suite.metrics if m not in METRIC_NAMES]
    if bad or not suite.metrics:
        raise SuiteError(f'metrics must be a non-empty subset of '
                         f'{list(METRIC_NAMES)}, got {suite.metrics}')
    if suite.autocast not in AUTOCAST_CHOICES:
        raise SuiteError(f'autocast must be one of {AUTOCAST_CHOICES}, got '
                         f'{suite.autocast!r}')
    if suite.num_workers < 0:
        raise SuiteError(f'num_workers must be >= 0, got {suite.num_workers}')
    for key in ('batch_size', 'repeats'):
        _positive_int(suite.throughput[key], f'throughput.{key}')
    if not isinstance(suite.throughput['warmup'], int) or \
            suite.throughput['warmup'] < 0:
        raise SuiteError('throughput.warmup must be an int >= 0, got '
                         f"{suite.throughput['warmup']!r}")
    if suite.lpips['net'] not in ('vgg', 'alex'):
        raise SuiteError(f"lpips.net must be 'vgg' or 'alex', got "
                         f"{suite.lpips['net']!r}")


def load_suite(name_or_path: str) -> BenchmarkSuite:
    """Read a suite by name (``configs/benchmark/<name>.json``) or path."""
    path = find_suite(name_or_path)
    with open(path, encoding='utf-8') as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as err:
            raise SuiteError(f'{path} is not valid JSON: {err}') from err
    # <root>/configs/benchmark/<file>.json -> <root>
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(path))))
    if not osp.isdir(osp.join(root, 'configs')):
        root = package_root()
    return parse_suite(raw, root, path)


def resolve_config(entry: TokenizerEntry, root: str) -> str:
    """The config file of ``entry``: as given (from the working directory),
    else below ``root``. Raises ``FileNotFoundError`` naming the entry."""
    candidates = [entry.config]
    if not osp.isabs(entry.config):
        candidates.append(osp.join(root, entry.config))
    for path in candidates:
        if osp.isfile(path):
            return path
    raise FileNotFoundError(
        f'tokenizer {entry.name!r}: config file not found: {entry.config!r} '
        f'(looked at {[osp.abspath(c) for c in candidates]})')


def check_checkpoint(entry: TokenizerEntry) -> None:
    """Raise ``FileNotFoundError`` naming the entry when its checkpoint is
    missing (random-weight entries and remote paths pass)."""
    path = entry.checkpoint
    if path is None or '://' in path or osp.isfile(path):
        return
    raise FileNotFoundError(
        f'tokenizer {entry.name!r}: checkpoint not found: {path!r} (resolved '
        f'to {osp.abspath(path)!r}). Train it first (python tools/train.py '
        f'{entry.config}), or pass --checkpoint "{entry.name}=PATH", or '
        f'--checkpoint "{entry.name}=none" for random weights.')


def parse_assignments(items: Sequence[str], what: str) -> Dict[str, str]:
    """``['NAME=VALUE', ...]`` -> ``{NAME: VALUE}`` (split at the last '=',
    so names may hold '=' like ``'DecQ Q=4=ckpt.pth'``)."""
    out = {}
    for item in items or ():
        name, sep, value = item.rpartition('=')
        if not sep or not name:
            raise SuiteError(f'{what} expects NAME=VALUE, got {item!r}')
        out[name] = value
    return out


def select(suite: BenchmarkSuite, names: Optional[Sequence[str]]) -> None:
    """Keep only the tokenizers named in ``names`` (in suite order)."""
    if not names:
        return
    known = [e.name for e in suite.tokenizers]
    missing = [n for n in names if n not in known]
    if missing:
        raise SuiteError(f'--only: no tokenizers {missing} in suite '
                         f'{suite.name!r} (it has {known})')
    suite.tokenizers = [e for e in suite.tokenizers if e.name in names]


def set_checkpoints(suite: BenchmarkSuite, checkpoints: Dict[str,
                                                              str]) -> None:
    """Override checkpoints by tokenizer name ('none' = random weights)."""
    known = {e.name: e for e in suite.tokenizers}
    missing = [n for n in checkpoints if n not in known]
    if missing:
        raise SuiteError(f'--checkpoint: no tokenizers {missing} in suite '
                         f'{suite.name!r} (it has {list(known)})')
    for name, path in checkpoints.items():
        known[name].checkpoint = normalize_checkpoint(path)


def set_image_size(suite: BenchmarkSuite, size: int) -> None:
    """Make the suite's dataset give ``size x size`` images: the ``size``
    of its crop transform, or its own ``image_size``."""
    dataset = suite.dataset
    transform = dataset.get('transform')
    if isinstance(transform, dict) and 'size' in transform:
        transform['size'] = size
    elif 'image_size' in dataset:
        dataset['image_size'] = size
    elif transform is None and dataset['type'] in ('ImageNetDataset',
                                                   'ImageFolderDataset'):
        dataset['transform'] = dict(type='AdmCenterCrop', size=size)
    else:
        raise SuiteError(f"--image-size: the suite's dataset "
                         f"({dataset['type']}) has no image size to set")
