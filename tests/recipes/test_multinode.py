"""Several nodes and another process count, on the CPU (gloo), through the
launch scripts (``tools/dist_train.sh``, ``tools/dist_test.sh``).

* Two nodes simulated on this host (``NNODES=2``, ``NODE_RANK=0|1``, one
  process each, each node its own work dir) train the built-in demo recipe
  (shrunk further) to exactly the checkpoint of one node with two
  processes; only node 0 writes it; ``dist_test.sh`` evaluates it on two
  nodes through torchrun's c10d rendezvous.
* ``--resume`` with another process count (2 -> 1, 1 -> 2) is refused,
  naming what to do, and with ``allow_process_count_change=True`` carries
  weights, optimizer state and epoch over, the iteration counter going on
  from the saved value (decq_plugin/engine/process_count.py).
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from decq_plugin.benchmark.launch import launch, launch_train, node_env

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs/demo/decq_tiny_1xb8-16e_demo-64.py'
SAMPLES, BATCH = 8, 2  # 4 iterations an epoch on 1 process, 2 on 2
pytestmark = pytest.mark.recipe


def _tiny_config(path: Path) -> str:
    from decq_plugin.testing import write_shrunk_config
    heads = dict(num_heads=2)
    return write_shrunk_config(str(DEMO), str(path), dict(
        model=dict(
            tokenizer=dict(
                encoder=dict(model_kwargs=dict(embed_dim=32, **heads)),
                condenser=heads,
                decoder=dict(arch=dict(width=32, depth=1, mlp_dim=64,
                                       **heads))),
            discriminator=dict(model_kwargs=dict(embed_dim=32, depth=4,
                                                 **heads)),
            disc_start=0, gan_start=0),
        train_dataloader=dict(batch_size=BATCH,
                              dataset=dict(samples_per_epoch=SAMPLES)),
        val_dataloader=dict(batch_size=8, dataset=dict(val_grids=[1])),
        train_cfg=dict(max_epochs=1, val_interval=1),
        default_hooks=dict(checkpoint=dict(interval=1, max_keep_ckpts=1),
                           logger=dict(interval=1))))


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict:
    """The tiny config, one epoch on one node of 2 processes and one epoch
    on 1 process."""
    root = tmp_path_factory.mktemp('multinode')
    config = _tiny_config(root / 'tiny.py')
    two = launch_train(config, 2, str(root / 'two'), str(root / 'log_two'),
                       cpu=True, timeout=300)
    assert two.ok, two.tails
    one = _train(config, root / 'one', [])
    assert one.returncode == 0, one.stdout[-3000:]
    return dict(root=root, config=config, two=root / 'two/epoch_1.pth',
                one=root / 'one/epoch_1.pth')


def _train(config: str, work: Path, args) -> subprocess.CompletedProcess:
    """``tools/train.py`` in one process."""
    env = node_env(1, 0, 0, 1, cpu=True)
    return subprocess.run(
        [sys.executable, str(ROOT / 'tools/train.py'), config, '--work-dir',
         str(work), *args], env=env, cwd=str(ROOT), capture_output=True,
        text=True, timeout=300)


def _load(path) -> dict:
    from decq_plugin.engine.checkpoint import safe_load_checkpoint
    return safe_load_checkpoint(str(path))


def _tensors(obj, name=''):
    if torch.is_tensor(obj):
        yield name, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f'{name}.{key}')
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f'{name}.{i}')


def _differing(a: dict, b: dict) -> list:
    out = []
    for part in ('state_dict', 'ema_state_dict', 'optimizer'):
        ta, tb = dict(_tensors(a[part])), dict(_tensors(b[part]))
        assert ta.keys() == tb.keys(), part
        out += [f'{part}{k}' for k in ta if not torch.equal(ta[k], tb[k])]
    return out


def _adam_steps(state: dict) -> set:
    """The step counts of the tokenizer optimizer's parameters."""
    return {int(s['step']) for s in state['optimizer']['tokenizer']['state']
            .values()}


def test_two_nodes_train_as_one_node_of_two_processes(runs, tmp_path):
    work = tmp_path / 'nodes'
    result = launch_train(runs['config'], 1, str(work), str(tmp_path / 'l'),
                          nodes=2, cpu=True, timeout=300)
    assert result.ok, result.tails
    # Only global rank 0 (node 0) writes; node 1's own folder holds none.
    assert sorted(p.name for p in work.glob('*.pth')) == ['epoch_1.pth']
    node1 = Path(result.work_dirs[1])
    assert node1.is_dir() and not list(node1.rglob('*.pth*'))
    state, reference = _load(work / 'epoch_1.pth'), _load(runs['two'])
    # Both ranks took part: two random states gathered, 2 iterations an
    # epoch (8 samples, 2 a step on each of 2 processes).
    assert len(state['random_states']) == 2
    assert state['meta']['iter'] == SAMPLES // (2 * BATCH)
    assert _differing(state, reference) == []
    # Evaluated on two nodes through torchrun's c10d rendezvous.
    test = launch('dist_test.sh', [runs['config'], str(work / 'epoch_1.pth')],
                  1, str(tmp_path / 'test'), str(tmp_path / 'lt'), nodes=2,
                  cpu=True, rdzv='c10d', timeout=300)
    assert test.ok, test.tails
    # (node ranks follow the order of arrival: either may be rank 0)
    assert 'PSNR' in ''.join(open(log).read() for log in test.logs)


def test_two_processes_to_one(runs, tmp_path):
    work = tmp_path / 'w'
    work.mkdir()
    ckpt = shutil.copy(runs['two'], work / 'epoch_1.pth')
    resume = ['--resume', str(ckpt), '--cfg-options',
              'train_cfg.max_epochs=2']
    refused = _train(runs['config'], work, resume)
    assert refused.returncode != 0
    out = refused.stdout + refused.stderr
    assert 'train.py: error:' in out and 'Traceback' not in out
    assert 'written by a run of 2 process(es), this run has 1' in out
    assert 'allow_process_count_change=True' in out
    assert not (work / 'epoch_2.pth').exists()
    done = _train(runs['config'], work,
                  resume + ['allow_process_count_change=True'])
    assert done.returncode == 0, done.stdout[-3000:]
    state = _load(work / 'epoch_2.pth')
    saved = SAMPLES // (2 * BATCH)
    assert state['meta']['epoch'] == 2
    assert state['meta']['iter'] == saved + SAMPLES // BATCH
    assert _adam_steps(state) == {saved + SAMPLES // BATCH}
    assert len(state['random_states']) == 1


def test_one_process_to_two(runs, tmp_path):
    work = tmp_path / 'w'
    work.mkdir()
    ckpt = shutil.copy(runs['one'], work / 'epoch_1.pth')
    resume = ['--resume', str(ckpt), '--cfg-options',
              'train_cfg.max_epochs=2']
    refused = launch_train(runs['config'], 2, str(work), str(tmp_path / 'a'),
                           args=resume, cpu=True, timeout=300)
    assert not refused.ok and not refused.timed_out
    text = ''.join(open(log).read() for log in refused.logs)
    assert 'written by a run of 1 process(es), this run has 2' in text
    assert not (work / 'epoch_2.pth').exists()
    done = launch_train(runs['config'], 2, str(work), str(tmp_path / 'b'),
                        args=resume + ['allow_process_count_change=True'],
                        cpu=True, timeout=300)
    assert done.ok, done.tails
    state = _load(work / 'epoch_2.pth')
    saved = SAMPLES // BATCH
    assert state['meta']['epoch'] == 2
    assert state['meta']['iter'] == saved + SAMPLES // (2 * BATCH)
    assert _adam_steps(state) == {saved + SAMPLES // (2 * BATCH)}
    assert len(state['random_states']) == 2
