"""sample_to_npz and extract_latents in a two-process ``torch.distributed``
run (gloo, CPU): each rank makes its share, rank 0 writes the one ``.npz``
and the merged latent folder, and both equal a single-process run."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from decq_plugin.datasets.latent_dataset import CachedLatentDataset

from tiny_models import tiny_ldm

WORKER = textwrap.dedent('''
    import json, os, sys
    import torch
    import torch.distributed as dist
    from mmengine.registry import init_default_scope
    from torch.utils.data import Dataset
    from decq_plugin.apis import extract_latents, sample_to_npz
    from decq_plugin.registry import MODELS

    class Images(Dataset):
        def __init__(self, n):
            g = torch.Generator().manual_seed(0)
            self.images = torch.rand(n, 3, 32, 32, generator=g)
        def __len__(self):
            return len(self.images)
        def __getitem__(self, i):
            return dict(inputs=self.images[i],
                        data_samples=dict(gt_label=i % 3))

    out, model_cfg = sys.argv[1], json.loads(sys.argv[2])
    distributed = 'RANK' in os.environ
    if distributed:
        dist.init_process_group('gloo')
    torch.set_num_threads(1)
    init_default_scope('decq_plugin')
    torch.manual_seed(0)
    model = MODELS.build(model_cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    result = sample_to_npz(model, os.path.join(out, 'samples'),
                           num_per_class=2, batch_size=2, progress=False)
    meta, encoded = extract_latents(model.tokenizer, Images(5),
                                    os.path.join(out, 'latents'), flip=False,
                                    batch_size=2, dtype='float32',
                                    progress=False)
    rank = dist.get_rank() if distributed else 0
    with open(os.path.join(out, f'result_{rank}.json'), 'w') as f:
        json.dump(dict(made=result['made_by_rank0'], encoded=encoded,
                       npz=result.get('npz'), count=meta['count']), f)
    if distributed:
        dist.destroy_process_group()
''')
MODEL = tiny_ldm()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run(tmp_path, out, world_size):
    script = tmp_path / 'worker.py'
    script.write_text(WORKER)
    port = str(_free_port())
    procs = []
    for rank in range(world_size):
        env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
        if world_size > 1:
            env.update(RANK=str(rank), WORLD_SIZE=str(world_size),
                       LOCAL_RANK=str(rank), MASTER_ADDR='127.0.0.1',
                       MASTER_PORT=port)
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(out), json.dumps(MODEL)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=str(tmp_path), env=env))
    for proc in procs:
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, log[-3000:]
    return [json.loads((out / f'result_{r}.json').read_text())
            for r in range(world_size)]


@pytest.mark.slow
def test_two_ranks_share_the_work_and_match_one_process(tmp_path):
    two = _run(tmp_path, tmp_path / 'two', 2)
    one = _run(tmp_path, tmp_path / 'one', 1)
    assert [r['made'] for r in two] == [3, 3] and one[0]['made'] == 6
    assert [r['encoded'] for r in two] == [3, 2]  # items 0,2,4 and 1,3
    assert two[0]['count'] == 5 and two[1]['npz'] is None
    with np.load(two[0]['npz']) as a, np.load(one[0]['npz']) as b:
        assert np.array_equal(a['arr_1'], b['arr_1'])
        diff = np.abs(a['arr_0'].astype(int) - b['arr_0'].astype(int))
        assert diff.max() <= 1
    merged = json.loads((tmp_path / 'two' / 'latents' /
                         'meta.json').read_text())
    assert merged['merged_from'] == ['rank_0', 'rank_1']
    many = CachedLatentDataset(str(tmp_path / 'two' / 'latents'),
                              use_flip=False)
    single = CachedLatentDataset(str(tmp_path / 'one' / 'latents'),
                                use_flip=False)
    for i, j in enumerate([0, 2, 4, 1, 3]):  # rank 0's items, then 1's
        assert many[i]['data_samples']['gt_label'] == j % 3
        torch.testing.assert_close(many[i]['inputs']['query'],
                                   single[j]['inputs']['query'],
                                   atol=1e-5, rtol=1e-5)
