"""Write the per-element latent statistics file of a trained tokenizer.

    python tools/compute_latent_stats.py CONFIG CHECKPOINT --out stats.pt \
        [--split train] [--max-images 50000] [--batch-size 64]

The file holds ``patch_mean``/``patch_var`` ``[C,h,w]`` and, for DecQ,
``query_mean``/``query_var`` ``[Q,C]``; set it as
``model.tokenizer.latent_stats`` for stage 2. Runs on several GPUs with
``torchrun ... --launcher pytorch`` (sums are all-reduced).
"""
import argparse
import os
import os.path as osp
import sys

import torch
from mmengine.config import DictAction
from mmengine.dist import all_reduce, get_rank, is_main_process
from tqdm import tqdm

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from decq_plugin.apis import build_tokenizer_from_config  # noqa: E402
from decq_plugin.models.tokenizers.latent_stats import \
    LatentStatsAccumulator  # noqa: E402
from decq_plugin.utils.launch import (check_file, init_launcher,  # noqa: E402
                                      load_config)
from decq_plugin.utils.cli import doc_summary  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument('config')
    parser.add_argument('checkpoint', help="stage-1 checkpoint ('none' for "
                        'the random weights of the config)')
    parser.add_argument('--out', required=True, help='statistics file')
    parser.add_argument('--split', choices=['train', 'val'], default='train',
                        help='which dataloader of the config to read')
    parser.add_argument('--max-images', type=int, default=None)
    parser.add_argument('--batch-size', type=int, default=None)
    parser.add_argument('--device', default=None)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'],
                        default='none')
    return parser.parse_args(argv)


def build_loader(cfg, split: str, batch_size=None):
    from mmengine.runner import Runner
    loader_cfg = dict(cfg[f'{split}_dataloader'])
    if batch_size:
        loader_cfg['batch_size'] = batch_size
    return Runner.build_dataloader(loader_cfg, seed=0)


def main(argv=None) -> None:
    args = parse_args(argv)
    init_launcher(args.launcher)
    checkpoint = None if args.checkpoint == 'none' else args.checkpoint
    if checkpoint:
        check_file(checkpoint, 'checkpoint')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda' and args.launcher != 'none':
        device = f'cuda:{torch.cuda.current_device()}'
    try:  # a misspelt --cfg-options key: one line naming it, no traceback
        cfg = load_config(args.config, args.cfg_options)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'compute_latent_stats.py: error: {err}')
    # Statistics are of raw latents: drop any stats file the config names.
    if 'tokenizer' in cfg.model:
        cfg.model.tokenizer.latent_stats = None
    tokenizer = build_tokenizer_from_config(cfg, checkpoint, device=device)
    loader = build_loader(cfg, args.split, args.batch_size)
    acc = LatentStatsAccumulator()
    limit = args.max_images or float('inf')
    bar = tqdm(loader, desc='latent stats', disable=not is_main_process())
    with torch.no_grad():
        for batch in bar:
            images = batch['inputs'].to(device).float()
            acc.update(tokenizer.encode(images, normalize=False))
            if acc.count >= limit:
                break
    # Combine the ranks: sums, squares and counts.
    for key in acc._sum:
        for store in (acc._sum, acc._sq):
            t = store[key].to(device)
            all_reduce(t)
            store[key] = t.cpu()
    count = torch.tensor(float(acc.count), device=device)
    all_reduce(count)
    acc.count = int(count.item())
    if get_rank() == 0:
        stats = acc.result()
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        torch.save(stats, args.out)
        shapes = {k: tuple(v.shape) for k, v in stats.items()}
        print(f'wrote {args.out} from {acc.count} images: {shapes}')


if __name__ == '__main__':
    main()
