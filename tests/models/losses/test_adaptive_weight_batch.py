"""The adaptive GAN weight over the global batch: 2 processes (gloo, CPU)
with half a batch each get the weight of one process on the whole batch;
the default ('local', the reference recipe) does not."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from decq_plugin.models.losses.adversarial import adaptive_weight


def _weight(x: torch.Tensor, layer: torch.nn.Linear, batch: str) -> float:
    out = layer(x)
    rec = (out - 1.0).abs().mean()
    gan = -(out ** 3).mean()
    return float(adaptive_weight(rec, gan, layer.weight, batch=batch))


def _data():
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(6, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(3, 6, generator=g))
        layer.bias.zero_()
    x = torch.randn(8, 6, generator=g)
    x[4:] *= 3.0  # the two halves differ
    return layer, x


def _worker(rank: int, init: str, out: str) -> None:
    dist.init_process_group('gloo', init_method=init, rank=rank,
                            world_size=2)
    layer, x = _data()
    half = x[4 * rank:4 * (rank + 1)]
    result = (_weight(half, layer, 'global'), _weight(half, layer, 'local'))
    torch.save(result, f'{out}.{rank}')
    dist.destroy_process_group()


@pytest.mark.slow
def test_global_batch_weight_matches_one_process(tmp_path):
    init = f'file://{tmp_path}/rendezvous'
    out = str(tmp_path / 'result')
    mp.spawn(_worker, args=(init, out), nprocs=2, join=True)
    layer, x = _data()
    one = _weight(x, layer, 'local')
    results = [torch.load(f'{out}.{r}') for r in range(2)]
    for global_w, _ in results:
        assert global_w == pytest.approx(one, rel=1e-5)
    assert results[0][1] != pytest.approx(one, rel=1e-3)  # local differs


def test_unknown_batch_mode_is_refused():
    layer, x = _data()
    with pytest.raises(ValueError, match="'local', 'global'"):
        _weight(x, layer, 'gloabl')
