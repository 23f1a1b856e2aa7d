"""Run ``tools/train.py`` in a forked child that can be killed (SIGKILL) at
a chosen point, and compare what runs leave on disk.

The child is a new process (``python fault_driver.py --kill KIND:N -- ARGS``)
that installs the kill point and calls ``tools/train.py``'s ``main``. Kill
points:

* ``('iter', n)``: at the start of training iteration ``n`` (1-based, over
  the whole run, counting the iterations of this process);
* ``('checkpoint_write', n)``: half-way through writing the n-th checkpoint
  file (the ``.partial`` file is cut short);
* ``('before_publish', n)``: after the n-th checkpoint is written, before it
  is renamed into place;
* ``('last_checkpoint', n)``: after ``last_checkpoint``'s temporary file is
  written, before it replaces the old one;
* ``('before_delete', n)``: after the n-th new checkpoint is in place, before
  an old one is deleted (``max_keep_ckpts``);
* ``('after', seconds)``: by the parent, after a wall-clock delay.
"""
import importlib.util
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

ROOT = Path(__file__).resolve().parents[2]
STAGE1_CONFIG = str(ROOT / 'configs/demo/decq_tiny_1xb8-16e_demo-64.py')
STAGE2_CONFIG = str(
    ROOT / 'configs/demo/ldm_dit-dh-tiny_decq-tiny_1xb16-40e_demo-64.py')

_TINY_VFM = ['model.tokenizer.encoder.model_kwargs.embed_dim=32',
             'model.tokenizer.encoder.model_kwargs.num_heads=2',
             'model.tokenizer.condenser.num_heads=2']
_TINY_DECODER = ['model.tokenizer.decoder.arch.width=32',
                 'model.tokenizer.decoder.arch.depth=1',
                 'model.tokenizer.decoder.arch.num_heads=2',
                 'model.tokenizer.decoder.arch.mlp_dim=64']
# Stage 1: 2 iterations an epoch, GAN and discriminator from epoch 2,
# validation and a checkpoint every epoch, one checkpoint kept.
STAGE1_OPTIONS = _TINY_VFM + _TINY_DECODER + [
    'train_dataloader.dataset.samples_per_epoch=8',
    'train_dataloader.batch_size=4',
    'val_dataloader.dataset.val_grids=[1]', 'val_dataloader.batch_size=8',
    'model.discriminator.model_kwargs.embed_dim=32',
    'model.discriminator.model_kwargs.num_heads=2',
    'model.discriminator.model_kwargs.depth=4', 'model.disc_start=1',
    'model.gan_start=1', 'train_cfg.max_epochs=3', 'train_cfg.val_interval=1',
    'default_hooks.checkpoint.interval=1',
    'default_hooks.checkpoint.max_keep_ckpts=1',
    'default_hooks.logger.interval=1'
]
# Stage 2: a tiny DiT-DH on a folder of random latents, 2 iterations an
# epoch, a checkpoint every epoch.
STAGE2_OPTIONS = _TINY_VFM + _TINY_DECODER + [
    'model.denoiser.arch.body_width=32', 'model.denoiser.arch.body_depth=1',
    'model.denoiser.arch.body_heads=2', 'model.denoiser.arch.head_width=32',
    'model.denoiser.arch.head_depth=1', 'model.denoiser.arch.head_heads=2',
    'train_dataloader.batch_size=4', 'train_cfg.max_epochs=3',
    'default_hooks.checkpoint.interval=1',
    'default_hooks.checkpoint.max_keep_ckpts=1',
    'default_hooks.logger.interval=1'
]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(
        f'decq_fault_tool_{name}', ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_latent_folder(folder: str, count: int = 8, num_classes: int = 8,
                        seed: int = 0) -> str:
    """Random latents of the tiny stage-2 tokenizer (patch [32, 4, 4],
    query [8, 32]) with flips, in 2 shards."""
    from decq_plugin.datasets.latent_dataset import LatentShardWriter
    g = torch.Generator().manual_seed(seed)
    with LatentShardWriter(folder, shard_size=count // 2,
                           tokenizer='tiny') as writer:
        for start in range(0, count, 4):
            lat = {'patch': torch.randn(4, 32, 4, 4, generator=g),
                   'query': torch.randn(4, 8, 32, generator=g)}
            flip = {k: torch.randn(v.shape, generator=g)
                    for k, v in lat.items()}
            labels = torch.arange(start, start + 4) % num_classes
            writer.add(lat, labels, flip)
    return folder


def stage2_options(latents: str) -> List[str]:
    return STAGE2_OPTIONS + [f'train_dataloader.dataset.data_root={latents}']


# -- kill points (installed in the child) ------------------------------------
def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _countdown(n: int):
    state = dict(left=n)

    def hit() -> bool:
        state['left'] -= 1
        return state['left'] == 0
    return hit


def _install_kill_point(kind: str, n: int) -> None:
    from mmengine.fileio import LocalBackend
    from mmengine.runner import EpochBasedTrainLoop

    from decq_plugin.engine import checkpoint_files
    from decq_plugin.engine.hooks import resumable_checkpoint_hook as hook
    hit = _countdown(n)
    if kind == 'iter':
        run_iter = EpochBasedTrainLoop.run_iter

        def run_iter_then_maybe_die(self, idx, data_batch):
            if hit():
                _die()
            return run_iter(self, idx, data_batch)
        EpochBasedTrainLoop.run_iter = run_iter_then_maybe_die
    elif kind == 'checkpoint_write':
        put = LocalBackend.put

        def put_half(self, obj, filepath):
            if str(filepath).endswith('.partial') and hit():
                with open(filepath, 'wb') as f:
                    f.write(obj[:len(obj) // 2])
                _die()
            return put(self, obj, filepath)
        LocalBackend.put = put_half
    elif kind == 'before_publish':
        publish = hook.publish

        def publish_or_die(tmp, final):
            if hit():
                _die()
            publish(tmp, final)
        hook.publish = publish_or_die
    elif kind == 'last_checkpoint':
        publish = checkpoint_files.publish

        def publish_marker(tmp, final):
            if osp.basename(final) == checkpoint_files.LAST_CHECKPOINT and \
                    hit():
                _die()
            publish(tmp, final)
        checkpoint_files.publish = publish_marker
    elif kind == 'before_delete':
        remove = os.remove

        def remove_or_die(path, *args, **kwargs):
            if str(path).endswith('.pth') and hit():
                _die()
            return remove(path, *args, **kwargs)
        hook.os.remove = remove_or_die
    else:
        raise ValueError(f'unknown kill point {kind!r}')


def _install_nan_sample(position: int) -> None:
    """Make dataset item ``position`` hold one NaN (an image pixel or a
    latent element), as a damaged file or a bad augmentation would."""
    from decq_plugin.datasets.demo_images import DemoImageDataset
    from decq_plugin.datasets.latent_dataset import CachedLatentDataset
    for cls in (DemoImageDataset, CachedLatentDataset):
        def patched(self, index, _get=cls.__getitem__):
            item = _get(self, index)
            if int(index) == position:
                inputs = item['inputs']
                tensor = inputs['patch'] if isinstance(inputs, dict) \
                    else inputs
                tensor[(0, ) * tensor.dim()] = float('nan')
            return item
        cls.__getitem__ = patched


def _child_main(args: List[str]) -> None:
    """``fault_driver.py [--kill KIND:N] [--nan-sample I] -- TRAIN_ARGS``
    (the child)."""
    kill = None
    if args[0] == '--kill':
        kind, n = args[1].split(':')
        kill = (kind, int(n))
        args = args[2:]
    if args[0] == '--nan-sample':
        _install_nan_sample(int(args[1]))
        args = args[2:]
    assert args[0] == '--', args
    if kill is not None:
        _install_kill_point(*kill)
    load_tool('train').main(args[1:])


def run_train(argv: Sequence[str], kill: Optional[Tuple] = None,
              timeout: float = 300, log: Optional[str] = None,
              nan_sample: Optional[int] = None) -> int:
    """Run ``tools/train.py argv`` in a child process; return its exit code
    (``-9`` when killed). ``kill``: a kill point (see the module);
    ``nan_sample``: dataset item that gets a NaN."""
    cmd = [sys.executable, __file__]
    if kill is not None and kill[0] != 'after':
        cmd += ['--kill', f'{kill[0]}:{kill[1]}']
    if nan_sample is not None:
        cmd += ['--nan-sample', str(nan_sample)]
    cmd += ['--', *argv]
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE='1')
    env.pop('LOCAL_RANK', None)
    out = open(log, 'ab') if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        if kill is not None and kill[0] == 'after':
            try:
                proc.wait(kill[1])
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise TimeoutError(f'train.py {argv} ran past {timeout} s')
    finally:
        if log:
            out.close()


def final_state(work_dir: str, epochs: int) -> Dict[str, torch.Tensor]:
    """Every tensor of ``epoch_{epochs}.pth`` (weights, EMA, optimizer),
    flattened to ``{'state_dict.x': t, 'optimizer.state.0.exp_avg': t}``."""
    from decq_plugin.engine.checkpoint import safe_load_checkpoint
    ckpt = safe_load_checkpoint(osp.join(work_dir, f'epoch_{epochs}.pth'))
    out = {}

    def walk(obj, name):
        if torch.is_tensor(obj):
            out[name] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f'{name}.{k}')
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f'{name}.{i}')
    for key in ('state_dict', 'ema_state_dict', 'optimizer'):
        walk(ckpt.get(key), key)
    return out


def differing(a: Dict[str, torch.Tensor],
              b: Dict[str, torch.Tensor]) -> List[str]:
    """Keys whose tensors are not bit-identical (or present in one only)."""
    keys = set(a) | set(b)
    return sorted(k for k in keys if k not in a or k not in b
                  or a[k].shape != b[k].shape or not torch.equal(a[k], b[k]))


def record(path: str, entry: dict) -> None:
    """Append one JSON line to the fault log ``path`` (when set)."""
    if path:
        with open(path, 'a') as f:
            f.write(json.dumps(entry) + '\n')


def resume_until_done(argv: Sequence[str], attempts: int = 3,
                      log: Optional[str] = None) -> int:
    code = None
    for _ in range(attempts):
        code = run_train(list(argv) + ['--resume'], log=log)
        if code == 0:
            return 0
    return code


def wait_for(path: str, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if osp.exists(path):
            return True
        time.sleep(0.05)
    return False


if __name__ == '__main__':
    _child_main(sys.argv[1:])
