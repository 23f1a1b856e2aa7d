"""Parameters and FLOPs of encoder, condensers, decoder and DiT-DH at full
size, RAE vs DecQ, with DecQ's overhead in percent.

    python tools/analysis/get_flops.py                       # defaults
    python tools/analysis/get_flops.py CFG_A CFG_B ... [--dit-arch XL]
        [--out flops.json]

The first config is the baseline. Models are built on the meta device with
pretrained weights switched off (nothing is downloaded or allocated).
Attention (scaled dot product) is counted.
"""
import argparse
import json
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

from decq_plugin.registry import MODELS  # noqa: E402
from decq_plugin.utils.flops import denoiser_costs, tokenizer_costs  # noqa
from decq_plugin.utils.launch import load_config  # noqa: E402
from decq_plugin.utils.cli import doc_summary  # noqa: E402

DEFAULT_CONFIGS = [
    'configs/rae/rae_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py',
    'configs/decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py',
]
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument('configs', nargs='*',
                        default=[osp.join(ROOT, c) for c in DEFAULT_CONFIGS])
    parser.add_argument('--dit-arch', default='XL',
                        help="DiT-DH size for the stage-2 rows ('none' to "
                        'skip)')
    parser.add_argument('--out', help='write the numbers as JSON here')
    return parser.parse_args(argv)


def build_tokenizer(config: str):
    cfg = load_config(config)
    tok_cfg = cfg.model.get('tokenizer', cfg.model)
    tok_cfg.encoder.pretrained = False
    with torch.device('meta'):
        return MODELS.build(tok_cfg)


def measure(config: str, dit_arch: str) -> dict:
    tokenizer = build_tokenizer(config)
    row = dict(config=osp.basename(config), **tokenizer_costs(tokenizer))
    if dit_arch.lower() != 'none':
        shapes = tokenizer.latent_shapes
        c, h, _ = shapes['patch']
        with torch.device('meta'):
            dit = MODELS.build(
                dict(type='DiTDH', arch=dit_arch, in_channels=c, grid_size=h,
                     num_queries=tokenizer.num_queries))
        row.update(denoiser_costs(dit, shapes))
    row['tokenizer_flops'] = (row['encoder_flops'] + row['condenser_flops'] +
                              row['decoder_flops'])
    return row


def overhead(value: float, base: float) -> str:
    return '-' if not base else f'{100 * (value / base - 1):+.2f}%'


def table(rows: list) -> str:
    base = rows[0]
    keys = [('encoder_params', 'VFM params (M)', 1e6),
            ('condenser_params', 'condenser params (M)', 1e6),
            ('decoder_params', 'decoder params (M)', 1e6),
            ('encoder_flops', 'VFM GFLOPs', 1e9),
            ('condenser_flops', 'condenser GFLOPs', 1e9),
            ('decoder_flops', 'decoder GFLOPs', 1e9),
            ('tokenizer_flops', 'encode+decode GFLOPs', 1e9),
            ('dit_params', 'DiT-DH params (M)', 1e6),
            ('dit_flops', 'DiT-DH GFLOPs / evaluation', 1e9),
            ('dit_train_flops', 'DiT-DH GFLOPs / train step', 1e9)]
    head = '| per image | ' + ' | '.join(
        r['config'] if i == 0 else f"{r['config']} | vs first"
        for i, r in enumerate(rows)) + ' |'
    ncol = 1 + 1 + 2 * (len(rows) - 1)
    lines = [head, '|' + '---|' * ncol]
    for key, name, scale in keys:
        if key not in base:
            continue
        cells = [f'{base[key] / scale:.2f}']
        for r in rows[1:]:
            cells += [f'{r[key] / scale:.2f}', overhead(r[key], base[key])]
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    rows = [measure(c, args.dit_arch) for c in args.configs]
    print(table(rows))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(rows, f, indent=2)


if __name__ == '__main__':
    main()
