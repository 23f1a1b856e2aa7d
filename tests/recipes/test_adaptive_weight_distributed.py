"""``model.adaptive_weight_batch='global'`` through ``tools/dist_train.sh``:
two gloo CPU processes with half the batch each take the adaptive GAN weight
and the tokenizer gradients of one process on the whole batch.

The tiny demo recipe, one GAN-phase iteration; the tokenizer's noise
augmentation and DiffAug are off (they draw per process), the rest as
shipped. The gradients are read from AdamW's first moment in the checkpoint
(``exp_avg = (1 - beta1) * grad`` after one step).
"""
import re
import sys
from pathlib import Path

import pytest
import torch

from .test_distributed import _dist

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tests' / 'faults'))
import fault_driver as D  # noqa: E402


def _options(batch_size: int) -> list:
    return D.STAGE1_OPTIONS + [
        'model.disc_start=0', 'model.gan_start=0',
        'model.tokenizer.noise_tau=0', 'model.diffaug=None',
        'model.adaptive_weight_batch=global', 'train_cfg.max_epochs=1',
        'train_cfg.val_interval=10', 'train_dataloader.dataset.'
        'samples_per_epoch=4', f'train_dataloader.batch_size={batch_size}']


def _first_moment(work_dir: str) -> torch.Tensor:
    from decq_plugin.engine.checkpoint import safe_load_checkpoint
    state = safe_load_checkpoint(f'{work_dir}/epoch_1.pth')
    moments = state['optimizer']['tokenizer']['state']
    return torch.cat([moments[k]['exp_avg'].flatten()
                      for k in sorted(moments)])


def _weight(output: str) -> str:
    found = re.findall(r'gan_adaptive_weight: (\S+)', output)
    assert found, output[-3000:]
    return found[-1]


@pytest.mark.recipe
def test_two_processes_take_the_weight_of_one(tmp_path):
    one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
    out_one = _dist('dist_train.sh', D.STAGE1_CONFIG, '--work-dir', one,
                    '--cfg-options', *_options(4), nproc=1)
    out_two = _dist('dist_train.sh', D.STAGE1_CONFIG, '--work-dir', two,
                    '--cfg-options', *_options(2), nproc=2)
    assert _weight(out_two) == _weight(out_one)
    a, b = _first_moment(one), _first_moment(two)
    assert float((a - b).norm() / a.norm()) < 1e-4
