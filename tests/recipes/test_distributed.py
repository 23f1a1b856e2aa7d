"""Two processes on the CPU (gloo) through ``tools/dist_train.sh``: stage 1
and stage 2 train through an epoch end (checkpoint, EMA swap), resume, and
their checkpoints load everywhere a single-process one does, with the same
keys.

Stage 1 is the shipped DecQ recipe (``MMSeparateDistributedDataParallel``,
two optimizers, EMA), stage 2 the shipped DiT-DH-XL DecQ recipe on the
latents of that stage-1 checkpoint, both shrunk in size only.
"""
import os
import os.path as osp
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from decq_plugin.testing import shrink

from decq_plugin.testing import make_reference_npz

from .test_recipes import ROOT, smoke

STAGE1 = ROOT / 'configs/decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py'  # noqa: E501
STAGE2 = ROOT / 'configs/ldm/ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_8xb128-80e_in1k-256.py'  # noqa: E501


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _dist(script: str, *args: str, nproc: int = 2) -> str:
    """Run ``tools/<script>`` with ``nproc`` CPU processes; returns output.

    ``dist_train.sh CONFIG GPUS ...`` and ``dist_test.sh CONFIG CKPT GPUS
    ...``: the process count follows the script's positional arguments.
    """
    env = dict(os.environ, PORT=str(_free_port()), OMP_NUM_THREADS='1',
               HF_HUB_OFFLINE='1', CUDA_VISIBLE_DEVICES='')
    positional = 2 if script == 'dist_test.sh' else 1
    cmd = ['bash', str(ROOT / 'tools' / script), *args[:positional],
           str(nproc), *args[positional:]]
    proc = subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True,
                          text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    return output


def _state(path: str) -> dict:
    from decq_plugin.engine.checkpoint import safe_load_checkpoint
    return safe_load_checkpoint(path)


def _train_then_resume(config: str, work_dir: str, epochs: int) -> dict:
    """Two processes train ``epochs - 1`` epochs, then ``--resume`` for the
    last one; returns the final checkpoint, checked against a single
    process's keys."""
    _dist('dist_train.sh', config, '--work-dir', work_dir, '--cfg-options',
          f'train_cfg.max_epochs={epochs - 1}')
    out = _dist('dist_train.sh', config, '--work-dir', work_dir, '--resume')
    assert f'resumed epoch: {epochs - 1}' in out
    path = smoke.last_checkpoint(work_dir)
    state = _state(path)
    assert state['meta']['epoch'] == epochs
    assert set(state['state_dict']) == _single_process_keys(config)
    return dict(state, path=path)


def _single_process_keys(config: str) -> set:
    from decq_plugin.apis import build_model_from_config
    model = build_model_from_config(config)
    return set(model.state_dict())


@pytest.mark.recipe
def test_two_processes_both_stages(tmp_path):
    from decq_plugin.testing import make_imagenet_folder, write_shrunk_config
    from decq_plugin.utils.launch import load_config
    torch.set_flush_denormal(True)
    data_root = make_imagenet_folder(str(tmp_path / 'imagenet'),
                                     num_classes=shrink.NUM_CLASSES,
                                     train_per_class=2)
    # -- stage 1: 2 epochs, then resume for the third ----------------------
    cfg1 = write_shrunk_config(
        str(STAGE1), str(tmp_path / 'stage1.py'),
        shrink.stage1_overrides(load_config(str(STAGE1)), data_root))
    state = _train_then_resume(cfg1, str(tmp_path / 'stage1'), epochs=3)
    ckpt1 = state['path']
    trainable = {k[len('module.'):] for k in state['ema_state_dict']
                 if k.startswith('module.')}
    assert trainable and trainable <= set(state['state_dict'])

    # The checkpoint loads where a single-process one does.
    test_tool = smoke.load_tool('test')
    metrics = str(tmp_path / 'metrics1.json')
    test_tool.main([cfg1, ckpt1, '--work-dir', str(tmp_path / 'test1'),
                    '--out', metrics])
    assert osp.getsize(metrics) > 0
    _dist('dist_test.sh', cfg1, ckpt1, '--work-dir',
          str(tmp_path / 'dist_test1'))
    images = sorted(Path(data_root, 'val').rglob('*.JPEG'))[:2]
    grid = str(tmp_path / 'grid.png')
    smoke.load_tool('reconstruct').main(
        [cfg1, ckpt1, *map(str, images), '--grid', grid, '--device', 'cpu',
         '--out-dir', str(tmp_path / 'recon')])
    assert len(list((tmp_path / 'recon').glob('*_recon.png'))) == 2
    assert osp.getsize(grid) > 0

    # -- stage 2 on the latents of that checkpoint -------------------------
    stats = str(tmp_path / 'stats.pt')
    latents = str(tmp_path / 'latents')
    smoke.load_tool('compute_latent_stats').main(
        [cfg1, ckpt1, '--out', stats, '--batch-size', '2', '--device', 'cpu'])
    smoke.load_tool('extract_latents').main(
        [cfg1, ckpt1, '--out-dir', latents, '--stats', stats,
         '--batch-size', '2', '--num-workers', '0', '--device', 'cpu'])
    size = shrink.image_size(load_config(cfg1).model.tokenizer)
    reference = make_reference_npz(str(tmp_path / 'ref.npz'), 8, size)
    artefacts = dict(tokenizer_ckpt=ckpt1, latent_stats=stats,
                     latent_root=latents, reference=reference)
    cfg2 = write_shrunk_config(
        str(STAGE2), str(tmp_path / 'stage2.py'),
        shrink.stage2_overrides(load_config(str(STAGE2)), artefacts))
    ckpt2 = _train_then_resume(cfg2, str(tmp_path / 'stage2'),
                               epochs=2)['path']
    test_tool.main([cfg2, ckpt2, '--work-dir', str(tmp_path / 'test2')])
    result = smoke.load_tool('sample').main(
        [cfg2, ckpt2, '--out-dir', str(tmp_path / 'samples'),
         '--num-per-class', '1', '--batch-size', '4', '--device', 'cpu',
         '--no-png'])
    assert osp.isfile(result['npz'])


def test_cpu_launcher_uses_gloo_and_cpu_ddp(monkeypatch):
    """``--launcher pytorch`` without a GPU: gloo, ``device_ids=None``."""
    from mmengine.config import Config

    from decq_plugin.utils import launch
    calls = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: False)
    monkeypatch.setattr(torch.distributed, 'init_process_group',
                        lambda backend: calls.append(backend))
    cfg = Config(dict(launcher='pytorch',
                      env_cfg=dict(dist_cfg=dict(backend='nccl')),
                      model_wrapper_cfg=dict(
                          type='MMSeparateDistributedDataParallel')))
    assert launch.prepare_cpu_distributed(cfg)
    assert calls == ['gloo']
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.model_wrapper_cfg.type == 'MMSeparateDistributedDataParallel'
    bare = Config(dict(launcher='pytorch', find_unused_parameters=True))
    assert launch.prepare_cpu_distributed(bare)
    assert bare.model_wrapper_cfg.find_unused_parameters is True
    assert bare.model_wrapper_cfg.device_ids is None
    assert not launch.prepare_cpu_distributed(Config(dict(launcher='none')))


def test_single_process_runs_stay_untouched():
    from mmengine.config import Config

    from decq_plugin.utils import launch
    cfg = Config(dict(launcher='none', env_cfg=dict(
        dist_cfg=dict(backend='nccl'))))
    assert not launch.prepare_cpu_distributed(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    assert 'model_wrapper_cfg' not in cfg
