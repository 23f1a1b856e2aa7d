"""The tiny configs of the other VFMs (SigLIP2-B/16, MAE-B/16, CLIP-B/16;
configs/demo/*_tiny-*) train one iteration through tools/train.py, offline
(random tiny timm models of the full VFM's layout), and write the stage-1
reconstruction grid; the full ones are built at full size on the meta
device by tests/test_configs.py."""
import glob
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY = sorted(glob.glob(osp.join(ROOT, 'configs', 'demo', '*_tiny-*.py')))


def _train_tool():
    spec = importlib.util.spec_from_file_location(
        'decq_tool_train_vfm', osp.join(ROOT, 'tools', 'train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_vfm_has_tiny_rae_and_decq():
    names = {osp.basename(p).split('_1xb')[0] for p in TINY}
    for vfm in ('siglip2-b16', 'mae-b16', 'clip-b16'):
        assert {f'rae_tiny-{vfm}', f'decq_tiny-{vfm}'} <= names


@pytest.mark.parametrize('path', TINY, ids=osp.basename)
def test_tiny_vfm_config_trains_one_iteration(path, tmp_work_dir):
    _train_tool().main([
        path, '--work-dir', tmp_work_dir, '--cfg-options',
        'train_dataloader.dataset.samples_per_epoch=8',
        'train_dataloader.batch_size=8', 'train_cfg.max_epochs=1',
        'train_cfg.val_interval=2', 'default_hooks.logger.interval=1'])
    scalars, = glob.glob(osp.join(tmp_work_dir, '*', 'vis_data',
                                  'scalars.json'))
    with open(scalars) as f:
        rows = [json.loads(line) for line in f]
    losses = [r['loss'] for r in rows if 'loss' in r]
    assert len(losses) == 1 and np.isfinite(losses[0]) and losses[0] > 0
    assert osp.isfile(osp.join(tmp_work_dir, 'epoch_1.pth'))
    # After training: 8 originals, each beside its reconstruction, 4 pairs
    # per row of 64 px cells with 2 px padding.
    grid = np.asarray(Image.open(osp.join(tmp_work_dir, 'reconstructions',
                                          'iter_000001.png')))
    assert grid.shape == (2 * 66 + 2, 8 * 66 + 2, 3)
