"""Every file a tool needs, checked before anything is built.

A full-size config run on a machine with nothing downloaded used to stop at
its first missing file, after a hub connection attempt and a chained
traceback. :func:`preflight_or_exit` reads the config instead and lists
*every* missing file at once, each with the config key (or command-line
argument) that sets its path, then exits without a traceback:

* datasets: ``data_root`` (and ``data_root/<split>`` for ImageNet) of the
  dataloaders the tool reads;
* pretrained weights built into the model: the VFM (timm or mmpretrain
  encoders), the DINO discriminator, the LPIPS trunk; a file set by
  ``weights_path`` / ``trunk_weights_path`` must exist, a hub file must be
  in the local cache when the network is off;
* the metric networks of the evaluators: the FID Inception-v3 weights and
  the reference batch;
* files the model reads itself: ``tokenizer_ckpt``, ``latent_stats``,
  ``guide_ckpt``, ``decode_with.ckpt``; and ``load_from`` and the files
  named on the command line.

Nothing here opens a network connection when ``HF_HUB_OFFLINE=1`` (the
tools' and tests' setting for "no network"); otherwise one connection
attempt (3 s) decides whether hub files may still be downloaded, and when
it fails the process goes offline (``HF_HUB_OFFLINE=1``), so that cached
weights load without hub retries.
"""
import contextlib
import io
import os
import os.path as osp
import socket
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

#: Values of ``HF_HUB_OFFLINE`` that mean "offline".
_TRUE = ('1', 'true', 'yes', 'on')
_VFM_TYPES = ('TimmViTEncoder', 'MMPretrainViTEncoder')
_online: Optional[bool] = None


def network_is_off() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set, else when huggingface.co cannot
    be reached (one attempt per process, 3 s at most)."""
    global _online
    if os.environ.get('HF_HUB_OFFLINE', '').strip().lower() in _TRUE:
        return True
    if _online is None:
        try:
            socket.create_connection(('huggingface.co', 443), timeout=3
                                     ).close()
            _online = True
        except OSError:
            _online = False
            _hub_offline()
    return not _online


def _hub_offline() -> None:
    """Put huggingface_hub (and so timm) in offline mode for this process:
    cached files are used without a connection attempt and its retries."""
    os.environ['HF_HUB_OFFLINE'] = '1'
    constants = sys.modules.get('huggingface_hub.constants')
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def _hub_dir() -> str:
    import torch
    return osp.join(torch.hub.get_dir(), 'checkpoints')


def timm_weights_cached(model_name: str) -> Optional[str]:
    """Where timm would find the pretrained weights of ``model_name``
    without downloading (the Hugging Face or torch hub cache); None when
    they are not cached. Reads the cache only."""
    import timm
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache
        repo = cfg.hf_hub_id.split('@')[0]
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else \
            ['model.safetensors', 'pytorch_model.bin']
        for name in names:
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str) and osp.isfile(found):
                return found
        return None
    if cfg.url:
        path = osp.join(_hub_dir(), osp.basename(cfg.url.split('?')[0]))
        return path if osp.isfile(path) else None
    return None


def timm_weights_source(model_name: str) -> str:
    """Where the pretrained weights of ``model_name`` come from, for a
    message."""
    import timm
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is not None and cfg.hf_hub_id:
        return f'model.safetensors of https://huggingface.co/{cfg.hf_hub_id}'
    if cfg is not None and cfg.url:
        return cfg.url
    return f"timm's weights for {model_name!r}"


class _NetworkOff:
    """True when the network is off; asks :func:`network_is_off` only when
    used (a tool whose files are all local never probes)."""

    def __bool__(self) -> bool:
        return network_is_off()


class _Report:
    """Problems as ``key: what not found: path`` lines, each key once."""

    def __init__(self) -> None:
        self.lines: List[str] = []
        self._seen = set()

    def add(self, key: str, text: str) -> None:
        if key not in self._seen:
            self._seen.add(key)
            self.lines.append(f'{key}: {text}' if key else text)

    def file(self, key: str, path: Any, what: str,
             folder: Optional[bool] = False) -> None:
        """Report ``path`` unless it is a file (a folder when ``folder``,
        either when ``folder`` is None); remote paths are left alone. An
        empty ``key`` (a command-line argument) is not printed."""
        if not isinstance(path, str) or '://' in path:
            return
        ok = {True: osp.isdir, False: osp.isfile,
              None: osp.exists}[folder](path)
        if not ok:
            self._seen.add(key or what)
            self.lines.append(
                (f'{key}: ' if key else '') + f'{what} not found: '
                f'{path!r} (resolved to {osp.abspath(path)!r})')


def _walk(node: Any, path: str):
    """``(dotted path, dict)`` of every dict in ``node``."""
    if isinstance(node, Mapping):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f'{path}.{key}' if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f'{path}.{i}')


def _hub_file(report: _Report, key: str, model_name: str, what: str,
              offline: _NetworkOff) -> None:
    if timm_weights_cached(model_name) is None and offline:
        report.add(key, f'not set, and the {what} weights of '
                   f'{model_name!r} are not in the local cache and the '
                   f'network is off: download '
                   f'{timm_weights_source(model_name)} and set {key}=PATH '
                   '(or pretrained=False for random weights)')


def _vfm(report: _Report, key: str, enc: Mapping,
         offline: _NetworkOff) -> None:
    if not enc.get('pretrained', True):
        return
    path = enc.get('weights_path')
    if enc.get('type') == 'MMPretrainViTEncoder' and not path:
        report.add(f'{key}.weights_path', 'not set: MMPretrainViTEncoder('
                   'pretrained=True) needs a local mmpretrain backbone '
                   'checkpoint')
    elif path:
        report.file(f'{key}.weights_path', path, 'VFM weights')
    elif enc.get('type') == 'TimmViTEncoder':
        _hub_file(report, f'{key}.weights_path',
                  enc.get('model_name', 'vit_base_patch14_reg4_dinov2'),
                  'VFM', offline)


def _losses(report: _Report, key: str, node: Mapping,
            offline: _NetworkOff) -> None:
    kind = node.get('type')
    if kind == 'DINODiscriminator' and node.get('pretrained', True):
        if node.get('weights_path'):
            report.file(f'{key}.weights_path', node['weights_path'],
                        'discriminator weights')
        else:
            _hub_file(report, f'{key}.weights_path',
                      node.get('model_name', 'vit_small_patch8_224.dino'),
                      'discriminator', offline)
    elif kind == 'LPIPSLoss' and node.get('pretrained_trunk', True):
        from decq_plugin.models.losses.perceptual import _TRUNK_WEIGHTS
        net = node.get('net', 'vgg')
        if net not in _TRUNK_WEIGHTS:
            return
        file_name, url = _TRUNK_WEIGHTS[net]
        if node.get('trunk_weights_path'):
            report.file(f'{key}.trunk_weights_path',
                        node['trunk_weights_path'],
                        f'LPIPS trunk, torchvision {file_name}')
        elif not osp.isfile(osp.join(_hub_dir(), file_name)) and offline:
            report.add(f'{key}.trunk_weights_path',
                       f'not set, and the LPIPS {net} trunk {file_name} is '
                       f'not in {_hub_dir()} and the network is off: '
                       f'download {url} and set {key}.trunk_weights_path='
                       'PATH (or pretrained_trunk=False)')


def _model_files(report: _Report, model: Mapping,
                 weights_from_checkpoint: bool) -> None:
    checkpoints = {'tokenizer_ckpt': 'stage-1 tokenizer checkpoint',
                   'guide_ckpt': 'autoguidance checkpoint'}
    for key, node in _walk(model, 'model'):
        if not weights_from_checkpoint:
            for name, what in checkpoints.items():
                report.file(f'{key}.{name}', node.get(name), what)
            if key.endswith('decode_with'):
                report.file(f'{key}.ckpt', node.get('ckpt'),
                            'decoder checkpoint')
        report.file(f'{key}.latent_stats', node.get('latent_stats'),
                    'latent statistics')


def _inception(report: _Report, key: str, spec: Any,
               offline: _NetworkOff) -> None:
    from decq_plugin.evaluation.inception import (
        INCEPTION_WEIGHTS_FILE, INCEPTION_WEIGHTS_URL,
        default_inception_weights_path)
    if spec is not None and (not isinstance(spec, Mapping) or spec.get(
            'type') != 'InceptionV3FeatureExtractor'):
        return
    path = spec.get('weights_path') if spec else None
    if path:
        report.file(f'{key}.weights_path', path,
                    f'FID Inception-v3 weights {INCEPTION_WEIGHTS_FILE}')
    elif not osp.isfile(default_inception_weights_path()) and offline:
        how = (f'{key}.weights_path=PATH' if spec else
               f'{key}.type=InceptionV3FeatureExtractor '
               f'{key}.weights_path=PATH')
        report.add(f'{key}.weights_path' if spec else key,
                   f'not set, and {INCEPTION_WEIGHTS_FILE} is not at '
                   f'{default_inception_weights_path()!r} and the network is '
                   f'off: download {INCEPTION_WEIGHTS_URL} and put it there '
                   f'or set {how}')


def _metrics(report: _Report, cfg: Any, split: str,
             offline: _NetworkOff) -> None:
    evaluator = cfg.get(f'{split}_evaluator')
    if not evaluator or (split == 'val' and not cfg.get('val_cfg')):
        return
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else \
        evaluator.get('metrics', [evaluator]) if isinstance(
            evaluator, Mapping) else []
    if isinstance(metrics, Mapping):
        metrics = [metrics]
    for i, metric in enumerate(metrics):
        if not isinstance(metric, Mapping):
            continue
        key = f'{split}_evaluator' if isinstance(evaluator, Mapping) and \
            metric is evaluator else f'{split}_evaluator.{i}'
        kind = metric.get('type')
        if kind in ('ReconstructionFIDMetric', 'GenerationMetric'):
            report.file(f'{key}.reference', metric.get('reference'),
                        'reference batch')
            _inception(report, f'{key}.feature_extractor',
                       metric.get('feature_extractor'), offline)


def _data(report: _Report, cfg: Any, split: str) -> None:
    if split == 'val' and not cfg.get('val_cfg'):
        return
    loader = cfg.get(f'{split}_dataloader')
    dataset = loader.get('dataset') if isinstance(loader, Mapping) else None
    for key, node in _walk(dataset, f'{split}_dataloader.dataset'):
        root = node.get('data_root')
        if not isinstance(root, str):
            continue
        if node.get('type') == 'ImageNetDataset':
            sub = node.get('split', 'train')
            report.file(f'{key}.data_root', osp.join(root, sub),
                        f'ImageNet {sub} images folder (<wnid>/*.JPEG)',
                        folder=True)
        else:
            report.file(f'{key}.data_root', root,
                        f'{node.get("type")} data folder', folder=True)


def missing_files(cfg: Any, parts: Sequence[str],
                  files: Optional[Mapping[str, Optional[str]]] = None,
                  inception: Union[bool, str, None] = None,
                  weights_from_checkpoint: bool = False) -> List[str]:
    """One line per missing file (``key: path (what)``).

    Args:
        cfg: the loaded config.
        parts: what the tool uses: ``'data:<split>'`` (``train`` / ``val``
            / ``test``), ``'vfm'``, ``'losses'`` (discriminator, LPIPS),
            ``'model_files'``, ``'metrics:<split>'``.
        files: command-line files, ``{what: path or None}`` (e.g.
            ``{'checkpoint': args.checkpoint}``).
        inception: the tool computes FID itself: True (the cached
            Inception weights) or the ``--inception-weights`` path.
        weights_from_checkpoint: the tool's checkpoint holds the VFM and the
            nested checkpoints' parts (they are not read).
    """
    offline = _NetworkOff()  # probed only when a hub file is not cached
    report = _Report()
    for name, path in (files or {}).items():
        report.file('', path, name, folder=None)
    if cfg.get('load_from') and not cfg.get('resume'):
        report.file('load_from', cfg.load_from, 'initial weights')
    model = cfg.get('model') or {}
    for part in parts:
        kind, _, split = part.partition(':')
        if kind == 'data':
            _data(report, cfg, split)
        elif kind == 'metrics':
            _metrics(report, cfg, split, offline)
        elif kind == 'model_files':
            _model_files(report, model, weights_from_checkpoint)
        elif kind in ('vfm', 'losses'):
            for key, node in _walk(model, 'model'):
                if kind == 'vfm' and node.get('type') in _VFM_TYPES and \
                        not weights_from_checkpoint:
                    _vfm(report, key, node, offline)
                elif kind == 'losses':
                    _losses(report, key, node, offline)
        else:
            raise ValueError(f'unknown preflight part {part!r}')
    if isinstance(inception, str):
        report.file('', inception, '--inception-weights file')
    elif inception:
        from decq_plugin.evaluation.inception import (
            INCEPTION_WEIGHTS_FILE, INCEPTION_WEIGHTS_URL,
            default_inception_weights_path)
        if not osp.isfile(default_inception_weights_path()) and offline:
            report.add('--inception-weights',
                       f'not given, and {INCEPTION_WEIGHTS_FILE} is not at '
                       f'{default_inception_weights_path()!r} and the '
                       f'network is off: download {INCEPTION_WEIGHTS_URL} '
                       'and pass --inception-weights PATH (or --feature-'
                       'extractor RandomConvFeatureExtractor: offline, not '
                       'comparable with published numbers)')
    return report.lines


def preflight_or_exit(tool: str, config: str,
                      cfg_options: Optional[Dict] = None,
                      parts: Sequence[str] = (),
                      files: Optional[Mapping[str, Optional[str]]] = None,
                      inception: Union[bool, str, None] = None,
                      weights_from_checkpoint: bool = False) -> None:
    """Exit with one message listing every missing file (and the config
    key or argument that sets each) before ``tool`` builds anything; return
    when nothing is missing. See :func:`missing_files`."""
    from .launch import load_config
    lines: List[str] = []
    cfg = None
    if not osp.isfile(config):
        lines.append(f'config file not found: {config!r} (resolved to '
                     f'{osp.abspath(config)!r})')
    else:
        # The tool loads it again and prints its warnings then.
        warnings_text = io.StringIO()
        try:
            with contextlib.redirect_stderr(warnings_text):
                cfg = load_config(config, cfg_options)
        except (FileNotFoundError, ValueError) as error:
            sys.stderr.write(warnings_text.getvalue())
            sys.exit(f'{tool}: error: {error}')
    if cfg is None:
        report = _Report()
        for name, path in (files or {}).items():
            report.file('', path, name, folder=None)
        lines += report.lines
    else:
        lines += missing_files(cfg, parts, files, inception,
                               weights_from_checkpoint)
    if lines:
        count = len(lines)
        # Paths given on the command line (the config, a checkpoint) are
        # fixed there, not with --cfg-options.
        argument = tuple(f'{name} not found: '
                         for name in ['config file', *(files or {})])
        hint = ('' if all(line.startswith(argument) for line in lines) else
                '; set each path with the key named, e.g. --cfg-options '
                'KEY=PATH')
        sys.exit(f'{tool}: error: {count} missing file'
                 f'{"s" if count > 1 else ""} (nothing was built{hint}):\n' +
                 '\n'.join(f'  - {line}' for line in lines))


#: What ``tools/train.py`` and ``tools/test.py`` read.
TRAIN_PARTS = ('data:train', 'data:val', 'vfm', 'losses', 'model_files',
               'metrics:val')
TEST_PARTS = ('data:test', 'vfm', 'losses', 'model_files', 'metrics:test')
