r"""Reconstruct images with a trained tokenizer; write original |
reconstruction side by side.

    python tools/reconstruct.py CONFIG CHECKPOINT IMAGE_OR_FOLDER [...] \
        --out-dir recon/ [--grid recon_grid.png]

Each image gets the evaluation crop (ADM centre crop at the tokenizer's
image size), is encoded and decoded; ``<name>_recon.png`` holds the pair.
PSNR per image is printed.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List

import torch
from mmengine.config import DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from decq_plugin.apis import build_tokenizer_from_config  # noqa: E402
from decq_plugin.datasets.image_folder import (  # noqa: E402
    IMG_EXTENSIONS, CorruptImageError, load_rgb_image)
from decq_plugin.datasets.transforms import AdmCenterCrop  # noqa: E402
from decq_plugin.evaluation.metrics.reconstruction import psnr  # noqa: E402
from decq_plugin.utils.images import save_image_grid  # noqa: E402
from decq_plugin.utils.launch import check_file, load_config  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0].replace('\n', ' '),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('config', help='stage-1 (or stage-2) config file')
    parser.add_argument('checkpoint', help="checkpoint ('none': random "
                        'weights of the config)')
    parser.add_argument('inputs', nargs='+', help='image files or folders')
    parser.add_argument('--out-dir', default='reconstructions',
                        help='where <name>_recon.png go (default: '
                        '%(default)s)')
    parser.add_argument('--grid', default=None,
                        help='also write every pair into one PNG grid')
    parser.add_argument('--batch-size', type=int, default=16,
                        help='default: %(default)s')
    parser.add_argument('--device', default=None,
                        help='default: cuda when available')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries (dotted keys)')
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error('--batch-size must be >= 1')
    return args


def list_inputs(inputs: List[str]) -> List[str]:
    """Files as given and the images inside given folders (sorted)."""
    paths = []
    for item in inputs:
        if osp.isdir(item):
            for root, _, files in sorted(os.walk(item)):
                paths += [osp.join(root, f) for f in sorted(files)
                          if f.lower().endswith(IMG_EXTENSIONS)]
        elif osp.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f'input {item!r} is neither an image '
                                    'file nor a folder')
    if not paths:
        raise FileNotFoundError(f'no images found in {inputs}')
    return paths


def check_inputs(config: str, checkpoint, inputs: List[str]) -> List[str]:
    """The image paths; every missing file (config, checkpoint, inputs) is
    reported at once, before the (slow) model build."""
    problems = []
    checks = [lambda: check_file(config, 'config file')]
    if checkpoint:
        checks.append(lambda: check_file(checkpoint, 'checkpoint'))
    paths: List[str] = []
    checks.append(lambda: paths.extend(list_inputs(inputs)))
    for check in checks:
        try:
            check()
        except FileNotFoundError as err:
            problems.append(str(err))
    if problems:
        raise FileNotFoundError('\n  '.join(problems))
    return paths


def read_images(paths: List[str], crop) -> tuple:
    """Cropped ``[N,3,S,S]`` images of the readable ``paths`` (unreadable
    ones are reported by name and skipped)."""
    kept, images = [], []
    for path in paths:
        try:
            images.append(crop(load_rgb_image(path)))
            kept.append(path)
        except CorruptImageError as err:
            print(f'skipped: {err}', file=sys.stderr)
    return kept, (torch.stack(images) if images else None)


def main(argv=None) -> None:
    args = parse_args(argv)
    checkpoint = None if args.checkpoint == 'none' else args.checkpoint
    paths = check_inputs(args.config, checkpoint, args.inputs)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    try:  # a misspelt --cfg-options key: one line naming it, no traceback
        cfg = load_config(args.config, args.cfg_options)
    except ValueError as err:
        sys.exit(f'reconstruct.py: error: {err}')
    tokenizer = build_tokenizer_from_config(cfg, checkpoint, device=device)
    crop = AdmCenterCrop(tokenizer.image_size)
    os.makedirs(args.out_dir, exist_ok=True)
    pairs = []
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start:start + args.batch_size]
        chunk, images = read_images(chunk, crop)
        if not chunk:
            continue
        with torch.no_grad():
            recon = tokenizer.reconstruct(images.to(device)).float().cpu()
        for path, img, rec in zip(chunk, images, recon):
            name = osp.splitext(osp.basename(path))[0]
            out = osp.join(args.out_dir, f'{name}_recon.png')
            save_image_grid(torch.stack([img, rec]), out, nrow=2)
            pairs += [img, rec]
            print(f'{path}: PSNR {psnr(rec[None], img[None]).item():.2f} dB '
                  f'-> {out}')
    if args.grid:
        save_image_grid(torch.stack(pairs), args.grid, nrow=4)
        print(f'grid -> {args.grid}')


if __name__ == '__main__':
    try:
        main()
    except FileNotFoundError as err:  # inputs, config, weights: no traceback
        sys.exit(f'{osp.basename(__file__)}: error: {err}')
