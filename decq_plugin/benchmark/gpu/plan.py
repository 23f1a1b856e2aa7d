"""Sizes and configs of one GPU benchmark or profile run, and the
repository root the configs and tools are found under."""
import os.path as osp
from typing import Optional

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
STAGE2 = 'configs/ldm/ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_8xb128-80e_in1k-256.py'  # noqa: E501
STAGE1 = 'configs/decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py'  # noqa: E501
SAMPLE = 'configs/ldm/ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_cfg_8xb128-800e_in1k-256.py'  # noqa: E501
DEMO2 = 'configs/demo/ldm_dit-dh-tiny_decq-tiny_1xb16-40e_demo-64.py'
DEMO1 = 'configs/demo/decq_tiny_1xb8-16e_demo-64.py'
TINY_DIT = dict(body_width=32, body_depth=2, body_heads=2, head_width=48,
                head_depth=1, head_heads=2)


class Plan:
    """Sizes of one run: full, ``quick`` (fewer iterations and samples) or
    ``dry_run`` (CPU, tiny models, the demo configs: checks the code)."""

    def __init__(self, dry_run: bool = False, quick: bool = False,
                 batch2: int = 128, batch1: int = 64, step_batch: int = 256,
                 num_samples: Optional[int] = None) -> None:
        dry = dry_run
        self.dry = dry
        self.device = 'cpu' if dry or not torch.cuda.is_available() \
            else 'cuda'
        self.batch2 = 4 if dry else batch2
        self.batch1 = 4 if dry else batch1
        self.step_batch = 4 if dry else step_batch
        self.iters2 = 2 if dry else (20 if quick else 30)
        self.iters1 = 2 if dry else (20 if quick else 30)
        self.log_interval = 1 if dry else 5
        self.step_iters = 2 if dry else (5 if quick else 10)
        self.num_samples = num_samples or (
            2 if dry else (128 if quick else 256))
        self.sample_batch = 2 if dry else 128
        self.stage2 = DEMO2 if dry else STAGE2
        self.stage1 = DEMO1 if dry else STAGE1
        self.sample_cfg = DEMO2 if dry else SAMPLE
        self.matmul_n = 64 if dry else 8192
        # CPU checks compile with dynamo's eager backend (no C++ build).
        self.compile = dict(backend='eager') if dry else True


def init_scope() -> None:
    from decq_plugin.utils import register_all_modules
    register_all_modules(init_default_scope=True)
