"""Per-tokenizer measurements: the scorer against the metric functions
applied to all images at once, rFID against a hand Frechet distance, the
timing loop, the fixed timing batch and cost counting (attention included
on the CPU too)."""
import numpy as np
import pytest
import torch

from decq_plugin.apis import build_tokenizer_from_config
from decq_plugin.benchmark.evaluation import (ReconstructionScorer,
                                              cost_summary,
                                              evaluate_reconstruction,
                                              fixed_batch, measure_throughput,
                                              time_calls)
from decq_plugin.benchmark.runner import load_entry_config
from decq_plugin.evaluation.fid import feature_statistics, frechet_distance
from decq_plugin.evaluation.inception import LazyFeatureExtractor
from decq_plugin.evaluation.metrics.reconstruction import psnr, ssim
from decq_plugin.registry import MODELS

DEMO_DECQ = 'configs/demo/decq_tiny_1xb8-16e_demo-64.py'


class HalfTokenizer(torch.nn.Module):
    """Reconstructs x as 0.5 * x + 0.25 (a known, lossy map)."""
    image_size = 16

    def encode(self, images):
        return {'patch': images * 0.5}

    def decode(self, latents):
        return (latents['patch'] + 0.25).clamp(0, 1)


class MeanLPIPS(torch.nn.Module):
    """Stands in for LPIPSLoss: the batch mean of per-image |x - y|."""

    def forward(self, pred, gt):
        return (pred - gt).abs().flatten(1).mean(1).mean()


@pytest.fixture
def images():
    torch.manual_seed(0)
    return torch.rand(6, 3, 16, 16)


def _batches(images, size):
    return [dict(inputs=chunk) for chunk in images.split(size)]


def test_scores_match_whole_set_metrics(images):
    extractor = LazyFeatureExtractor(
        dict(type='RandomConvFeatureExtractor', feature_dim=4,
             input_size=16), batch_size=4, device='cpu')
    scorer = ReconstructionScorer(('psnr', 'ssim', 'lpips', 'rfid'),
                                  lpips=MeanLPIPS(), extractor=extractor)
    values, reference = evaluate_reconstruction(
        HalfTokenizer(), _batches(images, 4), scorer, torch.device('cpu'),
        progress=False)
    recon = (images * 0.5 + 0.25).clamp(0, 1)
    assert values['num_images'] == 6
    assert values['psnr'] == pytest.approx(psnr(recon, images).mean().item())
    assert values['ssim'] == pytest.approx(ssim(recon, images).mean().item())
    assert values['lpips'] == pytest.approx(
        (recon - images).abs().flatten(1).mean(1).mean().item())
    gt_stats = feature_statistics(extractor(images)[0])
    expected = frechet_distance(*feature_statistics(extractor(recon)[0]),
                                *gt_stats)
    assert values['rfid'] == pytest.approx(expected)
    np.testing.assert_allclose(reference[0], gt_stats[0], rtol=1e-6)
    # With the reference given, only reconstructions are embedded.
    again = ReconstructionScorer(('rfid', ), extractor=extractor,
                                 reference=reference)
    values2, computed = evaluate_reconstruction(
        HalfTokenizer(), _batches(images, 3), again, torch.device('cpu'),
        progress=False)
    assert computed is None and again.gt_features == []
    assert values2['rfid'] == pytest.approx(expected)
    assert set(values2) == {'rfid', 'num_images'}


def test_scorer_checks(images):
    with pytest.raises(ValueError, match="'lpips' needs"):
        ReconstructionScorer(('lpips', ))
    with pytest.raises(ValueError, match="'rfid' needs"):
        ReconstructionScorer(('rfid', ))
    with pytest.raises(ValueError, match='no images'):
        ReconstructionScorer(('psnr', )).compute()
    tok = HalfTokenizer()
    tok.image_size = 32
    with pytest.raises(ValueError, match='decodes 32x32'):
        evaluate_reconstruction(tok, _batches(images, 6),
                                ReconstructionScorer(('psnr', )),
                                torch.device('cpu'), progress=False)


def test_time_calls_counts():
    calls = []
    times = time_calls(lambda: calls.append(1), warmup=2, repeats=3,
                       device=torch.device('cpu'))
    assert len(calls) == 5 and len(times) == 3
    assert all(t >= 0 for t in times)


def test_measure_throughput(images):
    result = measure_throughput(HalfTokenizer(), images, warmup=1, repeats=3)
    for part in ('encode', 'decode'):
        times = result[f'{part}_times_s']
        assert len(times) == 3
        assert result[f'{part}_images_per_s'] == pytest.approx(
            6 / sorted(times)[1])  # median of 3
    assert result['batch_size'] == 6 and result['device'] == 'cpu'


def test_fixed_batch_cycles():
    data = [dict(inputs=torch.full((3, 2, 2), float(i))) for i in range(3)]
    batch = fixed_batch(data, 5)
    assert batch.shape == (5, 3, 2, 2)
    assert batch[:, 0, 0, 0].tolist() == [0, 1, 2, 0, 1]
    with pytest.raises(ValueError, match='empty'):
        fixed_batch([], 2)


def test_costs_count_attention_on_cpu_and_meta():
    """The tiny DecQ VFM (12 blocks, width 96, 4x4 patches + CLS + 4
    registers = 21 tokens, MLP 384) by hand, attention included, counted
    on the real CPU model and on a meta copy; the counter's formula table
    is left as it was."""
    from torch.utils.flop_counter import flop_registry
    before = dict(flop_registry)
    cfg = load_entry_config(DEMO_DECQ, {})
    tok = build_tokenizer_from_config(cfg.copy())
    costs = cost_summary(tok)
    assert flop_registry == before
    n, d, mlp = 21, 96, 384
    block = 2 * n * d * (3 * d + d + 2 * mlp) + 2 * 2 * n * n * d
    patch_embed = 2 * 16 * d * 3 * 14 * 14
    assert costs['encoder_flops'] == 12 * block + patch_embed
    assert costs['encode_flops'] == (costs['encoder_flops'] +
                                     costs['condenser_flops'])
    assert costs['condenser_flops'] > 0 and costs['decode_flops'] > 0
    assert costs['params'] == sum(p.numel() for p in tok.parameters())
    tok_cfg = cfg.model.tokenizer
    tok_cfg.encoder.pretrained = False
    with torch.device('meta'):
        meta = MODELS.build(tok_cfg)
    assert cost_summary(meta) == costs
