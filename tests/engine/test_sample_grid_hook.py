"""SampleGridHook on a tiny LatentDiffusionModel trained by the Runner."""
import glob
import itertools
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.runner import Runner
from PIL import Image
from torch.utils.data import Dataset

from decq_plugin.engine.hooks.sample_grid_hook import (SampleGridHook,
                                                       grid_image)
from decq_plugin.models.diffusion.generation_model import LatentDiffusionModel

NUM_CLASSES, IMAGE = 4, 32
TOKENIZER = dict(
    type='RAETokenizer',
    encoder=dict(type='TimmViTEncoder', pretrained=False, input_size=28,
                 model_kwargs=dict(embed_dim=32, depth=2, num_heads=2)),
    decoder=dict(type='ViTPixelDecoder', patch_size=16,
                 arch=dict(width=32, depth=1, num_heads=2, mlp_dim=64)))
DIT = dict(type='DiTDH', arch=dict(body_width=32, body_depth=1, body_heads=2,
                                   head_width=32, head_depth=1, head_heads=2))
_names = itertools.count()


class TinyImages(Dataset):
    def __init__(self, n=8):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, IMAGE, IMAGE, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i],
                    data_samples=dict(gt_label=i % NUM_CLASSES))


def make_runner(work_dir, hook, max_iters=4, ema=False):
    torch.manual_seed(0)
    model = LatentDiffusionModel(
        tokenizer=TOKENIZER, denoiser=DIT, num_classes=NUM_CLASSES,
        sampler=dict(type='EulerSampler', num_points=3))
    hooks = [hook]
    if ema:
        hooks.insert(0, dict(type='EMAHook',
                             ema_type='TrainableExponentialMovingAverage',
                             momentum=0.01))
    return Runner(
        model=model, work_dir=str(work_dir),
        experiment_name=f'grid_test_{next(_names)}',
        train_dataloader=dict(
            dataset=TinyImages(), batch_size=4, num_workers=0,
            sampler=dict(type='InfiniteSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
        default_hooks=dict(checkpoint=None),
        custom_hooks=hooks, default_scope='decq_plugin',
        randomness=dict(seed=0), log_level='WARNING')


def read_png(path):
    return torch.from_numpy(np.array(Image.open(path)))


def test_grid_image_layout():
    imgs = torch.zeros(5, 3, 8, 6)
    imgs[1] = 1.0
    grid = grid_image(imgs, nrow=3, padding=2)
    assert grid.dtype == torch.uint8 and grid.shape == (2 * 10 + 2,
                                                        3 * 8 + 2, 3)
    assert grid[2:10, 2:8].max() == 0 and grid[2:10, 10:16].min() == 255


def test_writes_grids_during_and_after_training(tmp_path):
    hook = SampleGridHook(interval=2, num_samples=5, nrow=3, seed=3,
                          batch_size=2)
    runner = make_runner(tmp_path, hook, max_iters=5)
    runner.train()
    files = sorted(glob.glob(osp.join(str(tmp_path), 'samples', '*.png')))
    assert [osp.basename(f) for f in files] == [
        'iter_000002.png', 'iter_000004.png', 'iter_000005.png']
    grid = read_png(files[-1])
    # 2 rows x 3 columns of 32 px images with 2 px padding.
    assert grid.shape == (2 * 34 + 2, 3 * 34 + 2, 3)
    # The fixed classes spread over the label range.
    assert hook.labels.tolist() == [0, 0, 1, 2, 3]
    # The same fixed noise gives the same image twice (and the file holds
    # the grid of the final weights).
    model = runner.model
    again = hook.make_grid(model)
    assert torch.equal(again, hook.make_grid(model))
    assert torch.equal(again, grid)
    # Training changed the weights, so the grids changed.
    assert not torch.equal(read_png(files[0]), grid)
    # The visualizer backend received the images.
    vis = glob.glob(osp.join(str(tmp_path), '*', 'vis_data', 'vis_image',
                             'samples_*.png'))
    assert sorted(osp.basename(v) for v in vis) == [
        'samples_2.png', 'samples_4.png', 'samples_5.png']
    # Sampling restores the training mode (the tokenizer stays in eval).
    model.train()
    hook.make_grid(model)
    assert model.training and model.denoiser.training
    assert not model.tokenizer.training


def test_samples_with_the_ema_weights(tmp_path):
    hook = SampleGridHook(interval=0, num_samples=2, classes=[1, 3])
    runner = make_runner(tmp_path, hook, max_iters=3, ema=True)
    runner.train()
    files = glob.glob(osp.join(str(tmp_path), 'samples', '*.png'))
    assert [osp.basename(f) for f in files] == ['iter_000003.png']
    ema_hook = [h for h in runner.hooks if type(h).__name__ == 'EMAHook'][0]
    ema_model = ema_hook.ema_model.module
    saved = read_png(files[0])
    assert torch.equal(saved, hook.make_grid(ema_model))
    assert not torch.equal(saved, hook.make_grid(runner.model))
    assert hook.labels.tolist() == [1, 3]
    # The EMA copy shares the frozen tokenizer with the model.
    assert ema_model.tokenizer.decoder.head.weight is \
        runner.model.tokenizer.decoder.head.weight


def test_argument_checks():
    with pytest.raises(ValueError, match='interval'):
        SampleGridHook(interval=-1)
    with pytest.raises(ValueError, match='num_samples'):
        SampleGridHook(num_samples=0)
    with pytest.raises(ValueError, match='classes'):
        SampleGridHook(classes=[])
    hook = SampleGridHook(num_samples=2, classes=[NUM_CLASSES])

    class FakeRunner:
        model = None

    runner = FakeRunner()
    with pytest.raises(TypeError, match='sample'):
        hook.before_run(runner)
    torch.manual_seed(0)
    runner.model = LatentDiffusionModel(
        tokenizer=TOKENIZER, denoiser=DIT, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match='outside'):
        hook.before_run(runner)
