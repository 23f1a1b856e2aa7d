"""Time DecQ encoding against RAE encoding in one run (same device, same
batch, same VFM weights), interleaved, and report the ratio.

    python tools/analysis/benchmark_encode.py [--device cpu] [--batch-size 4]
        [--repeats 7] [--dtype float32] [--out result.json]

Both tokenizers are the full-size configs (DINOv2-B/14-reg at 224 px) with
random weights; the DecQ tokenizer shares the RAE tokenizer's VFM weights.
Each repeat times RAE then DecQ back to back; the reported ratio is the
median of the per-repeat ratios (machines are noisy: medians, not means).
Target of the project: DecQ / RAE <= 1.10.
"""
import argparse
import json
import os.path as osp
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

from decq_plugin.registry import MODELS  # noqa: E402
from decq_plugin.utils.launch import load_config  # noqa: E402
from decq_plugin.utils.cli import doc_summary  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RAE = 'configs/rae/rae_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py'
DECQ = 'configs/decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument('--rae-config', default=osp.join(ROOT, RAE))
    parser.add_argument('--decq-config', default=osp.join(ROOT, DECQ))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', default='float32',
                        choices=['float32', 'bfloat16', 'float16'])
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--out', help='write the results as JSON here')
    return parser.parse_args(argv)


def build_encoder_side(config: str, device: str):
    """The tokenizer of ``config`` without its (unused) decoder weights."""
    cfg = load_config(config)
    tok = cfg.model.tokenizer
    tok.encoder.pretrained = False
    tok.decoder.arch = dict(width=64, depth=1, num_heads=1, mlp_dim=64)
    return MODELS.build(tok).to(device).eval()


def timed(fn, device: str) -> float:
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(0)
    rae = build_encoder_side(args.rae_config, args.device)
    decq = build_encoder_side(args.decq_config, args.device)
    decq.encoder.load_state_dict(rae.encoder.state_dict())
    dtype = getattr(torch, args.dtype)
    size = rae.image_size
    images = torch.rand(args.batch_size, 3, size, size, device=args.device)
    autocast = torch.autocast(
        device_type=args.device.split(':')[0], dtype=dtype,
        enabled=dtype != torch.float32)

    def run(tok):
        with torch.no_grad(), autocast:
            tok.encode_raw(images)

    same = torch.equal(
        rae.encode_raw(images)['patch'], decq.encode_raw(images)['patch'])
    for _ in range(args.warmup):
        run(rae)
        run(decq)
    t_rae, t_decq, ratios = [], [], []
    for _ in range(args.repeats):
        a = timed(lambda: run(rae), args.device)
        b = timed(lambda: run(decq), args.device)
        t_rae.append(a)
        t_decq.append(b)
        ratios.append(b / a)
    result = dict(
        device=(torch.cuda.get_device_name() if args.device.startswith(
            'cuda') else platform.processor() or platform.machine()),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        dtype=args.dtype,
        batch_size=args.batch_size,
        repeats=args.repeats,
        rae_median_s=statistics.median(t_rae),
        decq_median_s=statistics.median(t_decq),
        ratio_median=statistics.median(ratios),
        ratio_min=min(ratios),
        ratio_max=max(ratios),
        rae_images_per_s=args.batch_size / statistics.median(t_rae),
        decq_images_per_s=args.batch_size / statistics.median(t_decq),
        patch_latents_identical=same,
    )
    for key, value in result.items():
        print(f'{key}: {value:.4f}' if isinstance(value, float) else
              f'{key}: {value}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
