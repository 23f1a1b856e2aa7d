"""Generation metrics: FID, sFID, Inception Score, precision and recall.

As the ADM evaluation suite (``evaluations/evaluator.py``) computes them:
FID against a reference batch's ``mu``/``sigma``; sFID the same on the
spatial features (``mixed_6/conv``, 7 channels) against ``mu_s``/
``sigma_s``; IS = exp(E_x KL(p(y|x) || p(y))) from the logits (without fc
bias) on consecutive splits of 5,000 samples in the order given (the last
one shorter when N is not a multiple), the mean over splits; samples must
therefore come in random class order (``ClassLabelDataset``'s default);
precision/recall with the k-NN manifold estimate of Kynkaanniemi et al. 2019
(k = 3) on the pool features.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.evaluator import BaseMetric

from decq_plugin.registry import METRICS
from ..fid import (ReferenceData, feature_statistics, frechet_distance,
                   iter_npz_images, load_reference)
from ..inception import (FeatureExtractorSpec, LazyFeatureExtractor,
                         uint8_nhwc_to_float)
from .reconstruction import stack_images

METRIC_NAMES = ('fid', 'is', 'precision', 'recall', 'sfid')
#: ADM's split size of the Inception Score.
IS_SPLIT_SIZE = 5000


def inception_score(logits: np.ndarray,
                    split_size: int = IS_SPLIT_SIZE) -> Tuple[float, float]:
    """Mean and std over the consecutive splits of ``split_size`` samples
    (ADM: 5,000; the last split holds the rest) of
    exp(mean_x KL(p(y|x) || p(y))), with p(y|x) = softmax(logits [N, K])."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if logits.dim() != 2 or logits.shape[0] < 1 or split_size < 1:
        raise ValueError(f'need logits [N, K] with N >= 1 and split_size '
                         f'>= 1, got {tuple(logits.shape)} and {split_size}')
    scores = []
    for part in logits.split(split_size):
        log_p = torch.log_softmax(part, dim=1)
        log_p_y = torch.log(log_p.exp().mean(dim=0, keepdim=True))
        kl = (log_p.exp() * (log_p - log_p_y)).sum(dim=1).mean()
        scores.append(torch.exp(kl).item())
    return float(np.mean(scores)), float(np.std(scores))


def _kth_neighbour_radii(feats: torch.Tensor, k: int,
                         batch_size: int) -> torch.Tensor:
    """Distance [N] from each row of feats [N, D] to its k-th nearest other
    row (the row itself, at distance 0, is the 0-th)."""
    if feats.shape[0] <= k:
        raise ValueError(f'need more than k={k} feature vectors, got '
                         f'{feats.shape[0]}')
    return torch.cat([
        torch.cdist(chunk, feats).kthvalue(k + 1, dim=1).values
        for chunk in feats.split(batch_size)
    ])


def _inside_manifold(queries: torch.Tensor, manifold: torch.Tensor,
                     radii: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Bool [Nq]: query lies in a ball of some manifold point
    (``||q - m_j|| <= radii_j``)."""
    inside = []
    for q_chunk in queries.split(batch_size):
        hit = torch.zeros(q_chunk.shape[0], dtype=torch.bool,
                          device=queries.device)
        for m_chunk, r_chunk in zip(manifold.split(batch_size),
                                    radii.split(batch_size)):
            hit |= (torch.cdist(q_chunk, m_chunk) <= r_chunk).any(dim=1)
        inside.append(hit)
    return torch.cat(inside)


def precision_recall(fake: np.ndarray,
                     real: np.ndarray,
                     k: int = 3,
                     batch_size: int = 1024,
                     device: Optional[str] = None) -> Tuple[float, float]:
    """k-NN manifold precision and recall (Kynkaanniemi et al. 2019).

    Precision: fraction of fake [Nf, D] inside the real manifold; recall:
    fraction of real [Nr, D] inside the fake manifold. Distances are
    computed in blocks of ``batch_size`` rows/columns on ``device``.
    """
    device = torch.device(device or (
        'cuda' if torch.cuda.is_available() else 'cpu'))
    fake_t = torch.as_tensor(np.asarray(fake), dtype=torch.float32,
                             device=device)
    real_t = torch.as_tensor(np.asarray(real), dtype=torch.float32,
                             device=device)
    if fake_t.dim() != 2 or fake_t.shape[1:] != real_t.shape[1:]:
        raise ValueError('fake and real features must be [N, D] with the '
                         f'same D, got {tuple(fake_t.shape)} and '
                         f'{tuple(real_t.shape)}')
    real_radii = _kth_neighbour_radii(real_t, k, batch_size)
    fake_radii = _kth_neighbour_radii(fake_t, k, batch_size)
    precision = _inside_manifold(fake_t, real_t, real_radii, batch_size)
    recall = _inside_manifold(real_t, fake_t, fake_radii, batch_size)
    return precision.float().mean().item(), recall.float().mean().item()


def _check_metrics(metrics: Sequence[str]) -> Tuple[str, ...]:
    metrics = tuple(metrics)
    unknown = set(metrics) - set(METRIC_NAMES)
    if not metrics or unknown:
        raise ValueError(f'metrics must be a non-empty subset of '
                         f'{METRIC_NAMES}, got {metrics}')
    return metrics


def compute_generation_metrics(features: np.ndarray,
                               logits: Optional[np.ndarray],
                               metrics: Sequence[str],
                               reference: Optional[ReferenceData],
                               is_split_size: int = IS_SPLIT_SIZE,
                               k: int = 3,
                               device: Optional[str] = None,
                               spatial: Optional[np.ndarray] = None) -> dict:
    """Metrics of samples with features [N, D] (logits [N, K] for IS,
    spatial features [N, S] for sFID) against ``reference``. Keys: FID,
    sFID, IS, IS_std, precision, recall."""
    out: Dict[str, float] = {}
    if reference is not None and reference.mu.shape[0] != features.shape[1]:
        raise ValueError(
            f'the reference statistics are {reference.mu.shape[0]}-d but the '
            f'feature extractor gives {features.shape[1]}-d features: use '
            'the extractor the reference was computed with')
    if 'fid' in metrics:
        out['FID'] = frechet_distance(*feature_statistics(features),
                                      reference.mu, reference.sigma)
    if 'sfid' in metrics:
        if spatial is None or reference.mu_s is None:
            raise ValueError('sFID needs spatial features of the samples and '
                             'the reference (mu_s / sigma_s)')
        out['sFID'] = frechet_distance(*feature_statistics(spatial),
                                       reference.mu_s, reference.sigma_s)
    if 'is' in metrics:
        out['IS'], out['IS_std'] = inception_score(logits, is_split_size)
    if 'precision' in metrics or 'recall' in metrics:
        precision, recall = precision_recall(features, reference.features, k,
                                             device=device)
        if 'precision' in metrics:
            out['precision'] = precision
        if 'recall' in metrics:
            out['recall'] = recall
    return out


@METRICS.register_module()
class GenerationMetric(BaseMetric):
    """FID / sFID / IS / precision / recall of generated images.

    Reads ``data_samples`` items ``{'pred': Tensor[3, H, W] in [0, 1]}``
    (quantised to 8 bits by truncation, as the ``.npz`` of
    ``tools/sample.py``, by the Inception extractor).

    Args:
        metric_names: any subset of ``('fid', 'is', 'precision', 'recall',
            'sfid')``. (Not ``metrics``: MMEngine's runner takes an
            evaluator dict with a ``metrics`` key for an ``Evaluator``.)
        reference: ADM reference ``.npz`` (``mu``, ``sigma``; ``mu_s``,
            ``sigma_s`` for sFID; images ``arr_0`` or ``features`` for
            precision/recall) or an image folder; required unless only 'is'
            is asked for.
        feature_extractor: None (FID Inception-v3), a ``MODELS`` config dict
            or a callable images -> (features, logits).
        batch_size: extractor batch size.
        device: where the extractor and distances run (default: cuda if
            available).
        is_split_size: samples per IS split (ADM: 5,000), in the order the
            samples come.
        k: neighbourhood size for precision/recall (3).
    """
    default_prefix: Optional[str] = None

    def __init__(self,
                 metric_names: Sequence[str] = METRIC_NAMES,
                 reference: Optional[str] = None,
                 feature_extractor: FeatureExtractorSpec = None,
                 batch_size: int = 50,
                 device: Optional[str] = None,
                 is_split_size: int = IS_SPLIT_SIZE,
                 k: int = 3,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metrics = _check_metrics(metric_names)
        if reference is None and set(self.metrics) - {'is'}:
            raise ValueError(f'reference is required for {self.metrics}')
        if is_split_size < 1 or k < 1:
            raise ValueError(f'is_split_size and k must be >= 1, got '
                             f'{is_split_size} and {k}')
        self.reference = reference
        self.extractor = LazyFeatureExtractor(
            feature_extractor, batch_size, device,
            spatial='sfid' in self.metrics)
        self.device = device
        self.is_split_size = is_split_size
        self.k = k
        self._reference_data: Optional[ReferenceData] = None

    def _load_reference(self) -> Optional[ReferenceData]:
        if self.reference is not None and self._reference_data is None:
            need = bool({'precision', 'recall'} & set(self.metrics))
            self._reference_data = load_reference(
                self.reference, self.extractor, need_features=need,
                need_spatial='sfid' in self.metrics)
        return self._reference_data

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        out = self.extractor(stack_images(data_samples, 'pred'))
        use_is, use_s = 'is' in self.metrics, 'sfid' in self.metrics
        for i, feat in enumerate(out[0]):
            self.results.append(
                dict(feat=feat, logits=out[1][i] if use_is else None,
                     spatial=out[2][i] if use_s else None))

    def compute_metrics(self, results: List[dict]) -> dict:
        features = np.stack([r['feat'] for r in results])
        logits = (np.stack([r['logits'] for r in results])
                  if 'is' in self.metrics else None)
        spatial = (np.stack([r['spatial'] for r in results])
                   if 'sfid' in self.metrics else None)
        return compute_generation_metrics(features, logits, self.metrics,
                                          self._load_reference(),
                                          self.is_split_size, self.k,
                                          self.device, spatial)


def evaluate_samples_npz(npz_path: str,
                         reference: Optional[str] = None,
                         feature_extractor: FeatureExtractorSpec = None,
                         metrics: Sequence[str] = METRIC_NAMES,
                         batch_size: int = 50,
                         device: Optional[str] = None,
                         is_split_size: int = IS_SPLIT_SIZE,
                         k: int = 3) -> dict:
    """Metrics of the samples in an ADM-style ``.npz`` (``arr_0`` uint8
    [N, H, W, 3], in the order written); arguments as in
    :class:`GenerationMetric`."""
    metrics = _check_metrics(metrics)
    if reference is None and set(metrics) - {'is'}:
        raise ValueError(f'reference is required for {metrics}')
    spatial = 'sfid' in metrics
    extractor = LazyFeatureExtractor(feature_extractor, batch_size, device,
                                     spatial=spatial)
    parts = [extractor(uint8_nhwc_to_float(batch))
             for batch in iter_npz_images(npz_path, 'arr_0', batch_size)]
    ref = None
    if reference is not None:
        need = bool({'precision', 'recall'} & set(metrics))
        ref = load_reference(reference, extractor, need_features=need,
                             need_spatial=spatial)
    features, logits = (np.concatenate([p[i] for p in parts])
                        for i in (0, 1))
    return compute_generation_metrics(
        features, logits, metrics, ref, is_split_size, k, device,
        np.concatenate([p[2] for p in parts]) if spatial else None)
