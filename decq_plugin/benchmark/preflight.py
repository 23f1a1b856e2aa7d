"""Everything a benchmark run needs, checked before any tokenizer is
evaluated, with every problem reported at once.

Each problem says which command-line flag of
``tools/benchmark_tokenizers.py`` fixes it: missing configs and
checkpoints (``--checkpoint NAME=PATH``), the dataset (``--data-root``), the
metric networks' weights (``--lpips-trunk-weights`` /
``--lpips-random-trunk``, ``--inception-weights`` /
``--feature-extractor``), the VFM weights of random-weight tokenizers
(``--encoder-weights``) and a dataset image size the tokenizers do not
reconstruct (``--image-size``).
"""
import copy
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config

from decq_plugin.evaluation.inception import (INCEPTION_WEIGHTS_FILE,
                                              INCEPTION_WEIGHTS_URL,
                                              InceptionWeightsError)
from decq_plugin.models.encoders.base import MissingPretrainedWeightsError
from decq_plugin.registry import MODELS
from .suite import (BenchmarkSuite, SuiteError, TokenizerEntry,
                    check_checkpoint, resolve_config)


class SetupError(SuiteError):
    """What a benchmark run lacks, all problems in one message."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        super().__init__(
            f'{count} problem{"s" if count > 1 else ""} found before any '
            'tokenizer was evaluated:\n' +
            '\n'.join(f'  - {p}' for p in self.problems))


def _collect(problems: List[str], check: Callable[[], object],
             errors: Tuple[type, ...], describe: Callable[[Exception], str]):
    """Run ``check``; on one of ``errors`` append ``describe(err)``."""
    try:
        return check()
    except errors as err:
        problems.append(describe(err))
        return None


def file_problems(suite: BenchmarkSuite
                  ) -> Tuple[Dict[str, str], List[str]]:
    """``({name: config path}, problems)`` for every config and checkpoint
    of the suite (entries whose config is missing are left out)."""
    configs, problems = {}, []
    for entry in suite.tokenizers:
        path = _collect(
            problems, lambda: resolve_config(entry, suite.root),
            (FileNotFoundError, ), lambda err: f'{err}; fix the config path '
            'in the suite file or in --tokenizer NAME CONFIG CHECKPOINT')
        if path is not None:
            configs[entry.name] = path
        _collect(problems, lambda: check_checkpoint(entry),
                 (FileNotFoundError, ), str)
    return configs, problems


def dataset_problem(build: Callable[[], object],
                    suite: BenchmarkSuite) -> Optional[str]:
    """None when ``build()`` gives a non-empty dataset, else what is
    wrong and the flag that points at the data."""
    problems: List[str] = []
    has_root = 'data_root' in suite.dataset
    fix = '; pass --data-root DIR' if has_root else ''
    _collect(problems, build, (FileNotFoundError, NotADirectoryError,
                               ValueError, RuntimeError),
             lambda err: f'dataset {suite.dataset["type"]}: {err}{fix}')
    return problems[0] if problems else None


def lpips_problem(build: Callable[[], object],
                  suite: BenchmarkSuite) -> Optional[str]:
    """None when the LPIPS network builds, else the flags that fix it."""
    problems: List[str] = []
    net = suite.lpips['net']
    given = suite.lpips.get('trunk_weights_path')

    def describe(err: Exception) -> str:
        from decq_plugin.models.losses.perceptual import _TRUNK_WEIGHTS
        file_name, url = _TRUNK_WEIGHTS[net]
        what = (f'--lpips-trunk-weights {given!r} does not exist' if given
                else f'the {net} trunk weights {file_name} are not in the '
                f'torch hub cache and could not be downloaded')
        return (f'LPIPS: {what}. Pass --lpips-trunk-weights PATH (a local '
                f'torchvision {file_name}, from {url}), or --lpips-random-trunk '
                f'(offline; NOT comparable with published LPIPS), or leave '
                f'LPIPS out with --metrics {_other_metrics(suite, "lpips")} '
                f'({_first_sentence(err)})')

    _collect(problems, build, (MissingPretrainedWeightsError, ), describe)
    return problems[0] if problems else None


def rfid_problem(build: Callable[[], object],
                 suite: BenchmarkSuite) -> Optional[str]:
    """None when the rFID feature network builds, else the flags that fix
    it."""
    problems: List[str] = []

    def describe(err: Exception) -> str:
        if isinstance(err, KeyError):  # not in the MODELS registry
            return (f'rFID: --feature-extractor: {err}; use '
                    f'InceptionV3FeatureExtractor (the FID network) or '
                    f'RandomConvFeatureExtractor (offline; not comparable)')
        return (f'rFID: the FID Inception-v3 weights {INCEPTION_WEIGHTS_FILE}'
                f' are not here ({_first_sentence(err)}). Download them from '
                f'{INCEPTION_WEIGHTS_URL} and pass --inception-weights PATH, '
                f'or pass --feature-extractor RandomConvFeatureExtractor '
                f'(offline; NOT comparable with published rFID), or leave '
                f'rFID out with --metrics {_other_metrics(suite, "rfid")}.')

    _collect(problems, build, (InceptionWeightsError, KeyError,
                               MissingPretrainedWeightsError), describe)
    return problems[0] if problems else None


def _other_metrics(suite: BenchmarkSuite, drop: str) -> str:
    rest = [m for m in suite.metrics if m != drop]
    return ' '.join(rest) if rest else 'psnr ssim'


def _first_sentence(err: Exception) -> str:
    """The cause of a failed download, else the message's first sentence."""
    cause = err.__cause__
    if cause is not None:
        return f'{type(cause).__name__}: ' + _first_sentence(cause)
    return str(err).split('. ')[0].strip().rstrip('.')


def _tokenizer_cfg(cfg: Config) -> dict:
    model = cfg.model
    return copy.deepcopy(model.tokenizer if 'tokenizer' in model else model)


def meta_image_size(cfg: Config) -> int:
    """Side of the images the config's tokenizer reconstructs, from a build
    on the meta device (no weights read, no memory used)."""
    tok_cfg = _tokenizer_cfg(cfg)
    if 'encoder' in tok_cfg:
        tok_cfg.encoder.pretrained = False
    with warnings.catch_warnings(), torch.device('meta'):
        warnings.simplefilter('ignore', UserWarning)
        return int(MODELS.build(tok_cfg).image_size)


def _weights_source(encoder: dict) -> str:
    """Which file a VFM encoder config wants, for the error message."""
    if encoder.get('type') == 'TimmViTEncoder':
        from decq_plugin.utils.preflight import timm_weights_source
        return timm_weights_source(
            encoder.get('model_name', 'vit_base_patch14_reg4_dinov2'))
    return 'the VFM weight file'


def tokenizer_problems(entries: Sequence[Tuple[TokenizerEntry, Config]],
                       image_size: Optional[int]) -> List[str]:
    """Per tokenizer about to be built: the config builds, its image size
    is the dataset's and, for random-weight tokenizers, the pretrained VFM
    weights can be read (each distinct VFM is loaded once)."""
    problems: List[str] = []
    sizes: Dict[str, int] = {}
    encoders: Dict[str, Tuple[dict, List[str]]] = {}  # config -> names
    for entry, cfg in entries:
        size = _collect(
            problems, lambda: meta_image_size(cfg), (Exception, ),
            lambda err: f'tokenizer {entry.name!r}: the config does not '
            f'build ({type(err).__name__}: {err})')
        if size is None:
            continue
        sizes[entry.name] = size
        encoder = _tokenizer_cfg(cfg).get('encoder')
        if entry.checkpoint is None and encoder is not None and \
                encoder.get('pretrained', True):
            key = repr(sorted(encoder.to_dict().items()))
            encoders.setdefault(key, (encoder, []))[1].append(entry.name)
    for encoder, names in encoders.values():
        found: List[str] = []
        _collect(found, lambda: MODELS.build(encoder),
                 (MissingPretrainedWeightsError, ), _first_sentence)
        if found:
            which = ', '.join(repr(n) for n in names)
            problems.append(
                f'tokenizer{"s" if len(names) > 1 else ""} {which} (random '
                f'weights) need{"" if len(names) > 1 else "s"} the '
                f'pretrained VFM weights ({found[0]}). Pass --encoder-weights '
                f'PATH ({_weights_source(encoder)}), or --checkpoint '
                f'"{names[0]}=PATH" (a trained checkpoint holds the VFM)')
    if image_size is not None:
        wrong: Dict[int, List[str]] = {}
        for name, size in sizes.items():
            if size != image_size:
                wrong.setdefault(size, []).append(name)
        if wrong:
            groups = '; '.join(f'{s}x{s}: ' + ', '.join(map(repr, names))
                               for s, names in sorted(wrong.items()))
            problems.append(
                f'the dataset gives {image_size}x{image_size} images, the '
                f'tokenizers reconstruct other sizes ({groups}); pass '
                f'--image-size {min(wrong)}' +
                (' (tokenizers of different sizes need separate runs: '
                 '--only NAME ...)' if len(set(sizes.values())) > 1 else ''))
    return problems
