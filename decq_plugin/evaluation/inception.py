"""Feature extractors for FID / IS / precision-recall.

An extractor maps images [N, 3, H, W] float in [0, 1] to
``(features [N, D], logits [N, K])``, and built with ``spatial=True`` to
``(features, logits, spatial [N, S])`` (the spatial features of sFID):

- :class:`InceptionV3FeatureExtractor`: the FID Inception-v3 (TensorFlow
  "2015-12-05" graph, as used by the ADM suite and torch-fidelity), run
  through torch-fidelity's ``inception-v3-compat`` port; D = 2048 pool
  features, K = 1008 logits without the fc bias (what the IS of the ADM suite
  and torch-fidelity use); spatial: the ADM evaluator's ``mixed_6/conv``
  (torch-fidelity's ``Mixed_6d.branch1x1``, after its ReLU), the first 7
  channels of the 17x17 map flattened in TensorFlow's (h, w, c) order,
  S = 2023.
- :class:`RandomConvFeatureExtractor`: a tiny seeded random conv net for
  tests and the offline demo.

Metrics accept ``feature_extractor`` as None (Inception-v3), a config dict
built from ``MODELS`` or any callable with the contract above.
"""
import io
import os
import os.path as osp
from typing import Callable, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from decq_plugin.registry import MODELS

FeatureExtractorSpec = Union[None, dict, Callable]

INCEPTION_WEIGHTS_FILE = 'weights-inception-2015-12-05-6726825d.pth'
INCEPTION_WEIGHTS_URL = ('https://github.com/toshas/torch-fidelity/releases/'
                         f'download/v0.2.0/{INCEPTION_WEIGHTS_FILE}')


#: channels of ``mixed_6/conv`` that the ADM evaluator keeps for sFID.
SPATIAL_CHANNELS = 7


def spatial_features(feature_map: torch.Tensor,
                     channels: int = SPATIAL_CHANNELS) -> torch.Tensor:
    """ADM's sFID features: [N, C, h, w] -> the first ``channels``
    channels in (h, w, c) order, [N, h * w * channels] float32."""
    return feature_map[:, :channels].permute(0, 2, 3, 1).flatten(1).float()


class InceptionWeightsError(RuntimeError):
    """The FID Inception-v3 weights file is missing and cannot be fetched."""


def default_inception_weights_path() -> str:
    """Where torch's hub cache keeps the weights (``$TORCH_HOME/hub/
    checkpoints``), which is also where torch-fidelity downloads them."""
    return osp.join(torch.hub.get_dir(), 'checkpoints', INCEPTION_WEIGHTS_FILE)


def _download_weights(url: str, dst: str) -> None:
    """Download with torch.hub, checking the sha256 prefix in the name."""
    os.makedirs(osp.dirname(dst), exist_ok=True)
    torch.hub.download_url_to_file(url, dst, hash_prefix='6726825d')


def _resolve_weights(weights_path: Optional[str], allow_download: bool) -> str:
    how_to = (
        f"Download '{INCEPTION_WEIGHTS_FILE}' (torch-fidelity's conversion "
        f'of the TF 2015-12-05 FID Inception-v3) from {INCEPTION_WEIGHTS_URL} '
        f"on a machine with internet, then either put it at "
        f"'{default_inception_weights_path()}' or pass its path as "
        "feature_extractor=dict(type='InceptionV3FeatureExtractor', "
        "weights_path='/path/to/" + INCEPTION_WEIGHTS_FILE + "').")
    if weights_path is not None:
        if not osp.isfile(weights_path):
            raise InceptionWeightsError(
                f"weights_path '{weights_path}' does not exist. {how_to}")
        return weights_path
    path = default_inception_weights_path()
    if osp.isfile(path):
        return path
    if not allow_download:
        raise InceptionWeightsError(
            f'FID Inception-v3 weights not found and allow_download=False. '
            f'{how_to}')
    try:
        _download_weights(INCEPTION_WEIGHTS_URL, path)
    except Exception as err:  # network errors come in many types
        raise InceptionWeightsError(
            f'could not download the FID Inception-v3 weights ({err!r}). '
            f'{how_to}') from err
    return path


@MODELS.register_module()
class InceptionV3FeatureExtractor(nn.Module):
    """FID Inception-v3 (torch-fidelity ``inception-v3-compat``).

    Args:
        weights_path: local copy of ``weights-inception-2015-12-05-6726825d
            .pth``; None looks in the torch hub cache and downloads there.
        allow_download: whether a missing file may be downloaded.
        spatial: also return the sFID features (see the module docstring).

    Images are quantised to 8 bits by truncation, as the ADM / RAE samplers
    write them (exact for images that came from uint8).

    Weights are read with ``torch.load(weights_only=True)`` and handed to
    torch-fidelity as an in-memory state dict (its own loader unpickles
    without that safeguard).
    """
    feature_dim = 2048
    num_classes = 1008

    def __init__(self,
                 weights_path: Optional[str] = None,
                 allow_download: bool = True,
                 spatial: bool = False) -> None:
        super().__init__()
        self.spatial = spatial
        path = _resolve_weights(weights_path, allow_download)
        from torch_fidelity.feature_extractor_inceptionv3 import \
            FeatureExtractorInceptionV3  # slow import (torchvision)
        from decq_plugin.engine.checkpoint import safe_load_checkpoint
        state_dict = safe_load_checkpoint(  # plain tensors; names the file
            path, expected='the torch-fidelity Inception-v3 state dict '
            '(feature_extractor.weights_path)')
        # torch-fidelity unpickles its weights with weights_only=False; what
        # it gets here holds nothing but the tensors loaded safely above
        buffer = io.BytesIO()
        torch.save(state_dict, buffer)
        buffer.seek(0)
        self.net = FeatureExtractorInceptionV3(
            'inception-v3-compat', ['2048', 'logits_unbiased'],
            feature_extractor_weights_path=buffer)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """images [N, 3, H, W] in [0, 1] -> features [N, 2048], logits
        [N, 1008] (and spatial [N, 2023]); torch-fidelity takes uint8
        [0, 255] and resizes to 299."""
        from decq_plugin.utils.images import to_uint8
        uint8 = to_uint8(images)
        if not self.spatial:
            return tuple(self.net(uint8))
        seen = {}
        handle = self.net.Mixed_6d.branch1x1.register_forward_hook(
            lambda module, args, out: seen.update(map=out))
        try:
            features, logits = self.net(uint8)
        finally:
            handle.remove()
        return features, logits, spatial_features(seen['map'])


@MODELS.register_module()
class RandomConvFeatureExtractor(nn.Module):
    """Tiny deterministic random conv net standing in for Inception.

    Images are resized to ``input_size``, mapped to [-1, 1], passed through
    ``num_layers`` stride-2 3x3 convs with ReLU and average-pooled to
    features [N, feature_dim] (non-negative, like Inception's pool
    features); a linear layer gives logits [N, num_classes]. With
    ``spatial=True`` the last layer's map gives sFID-style spatial features
    (:func:`spatial_features`). Weights are drawn from ``seed`` only (the
    global RNG is untouched).
    """

    def __init__(self,
                 feature_dim: int = 64,
                 num_classes: int = 10,
                 width: int = 16,
                 num_layers: int = 3,
                 input_size: int = 32,
                 seed: int = 0,
                 spatial: bool = False) -> None:
        super().__init__()
        self.spatial = spatial
        for name, value in (('feature_dim', feature_dim),
                            ('num_classes', num_classes), ('width', width),
                            ('num_layers', num_layers),
                            ('input_size', input_size)):
            if value < 1:
                raise ValueError(f'{name} must be >= 1, got {value}')
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.input_size = input_size
        channels = [3] + [width] * (num_layers - 1) + [feature_dim]
        with torch.random.fork_rng(devices=[]):  # default init uses the RNG
            self.convs = nn.ModuleList(
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
                for c_in, c_out in zip(channels[:-1], channels[1:]))
            self.head = nn.Linear(feature_dim, num_classes)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in self.parameters():
                fan_in = param[0].numel() if param.dim() > 1 else 1
                param.copy_(torch.randn(param.shape, generator=generator) /
                            fan_in**0.5)
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """images [N, 3, H, W] in [0, 1] -> features [N, D], logits [N, K]
        (and spatial [N, S])."""
        x = F.interpolate(images.float(), size=self.input_size,
                          mode='bilinear', align_corners=False) * 2 - 1
        maps = []
        for conv in self.convs:
            x = F.relu(conv(x))
            maps.append(x)
        features = x.mean(dim=(2, 3))
        if self.spatial:
            return features, self.head(features), spatial_features(maps[-1])
        return features, self.head(features)


def build_feature_extractor(spec: FeatureExtractorSpec = None,
                            spatial: bool = False) -> Callable:
    """None -> :class:`InceptionV3FeatureExtractor`; a dict -> built from
    ``MODELS`` (``spatial=True`` added when asked for); a callable (e.g. an
    ``nn.Module``) is returned as is."""
    if spec is None:
        return InceptionV3FeatureExtractor(spatial=spatial)
    if isinstance(spec, dict):
        return MODELS.build(dict(spec, spatial=True) if spatial else spec)
    if callable(spec):
        return spec
    raise TypeError('feature_extractor must be None, a config dict or a '
                    f'callable, got {type(spec).__name__}')


def uint8_nhwc_to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1]."""
    array = np.array(images, dtype=np.uint8)  # a writable copy
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255


class LazyFeatureExtractor:
    """Builds the extractor on first use, moves it to ``device`` and runs it
    in batches of ``batch_size``.

    Calling it with images [N, 3, H, W] in [0, 1] returns float32 numpy
    ``(features [N, D], logits [N, K])``, with ``spatial=True``
    ``(features, logits, spatial [N, S])``.
    """

    def __init__(self,
                 spec: FeatureExtractorSpec = None,
                 batch_size: int = 50,
                 device: Optional[str] = None,
                 spatial: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.spec = spec
        self.spatial = spatial
        self.batch_size = batch_size
        self.device = torch.device(device or (
            'cuda' if torch.cuda.is_available() else 'cpu'))
        self._extractor: Optional[Callable] = None

    @property
    def extractor(self) -> Callable:
        if self._extractor is None:
            extractor = build_feature_extractor(self.spec, self.spatial)
            if isinstance(extractor, nn.Module):
                extractor = extractor.to(self.device).eval()
            self._extractor = extractor
        return self._extractor

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Tuple[np.ndarray, ...]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError('images must have shape [N, 3, H, W], got '
                             f'{tuple(images.shape)}')
        want = 3 if self.spatial else 2
        parts = []
        for chunk in images.split(self.batch_size):
            out = self.extractor(chunk.to(self.device))
            if len(out) < want:
                raise ValueError(
                    'the feature extractor gives no spatial features (sFID '
                    'needs them): use one that returns (features, logits, '
                    'spatial) when built with spatial=True')
            parts.append([t.float().cpu().numpy() for t in out[:want]])
        return tuple(np.concatenate(p) for p in zip(*parts))
