"""Cache a trained tokenizer's latents of a dataset, for stage-2 training.

    python tools/extract_latents.py CONFIG CHECKPOINT --out-dir DIR \
        [--stats STATS.pt] [--split train] [--batch-size 64] \
        [--shard-size 1024] [--max-images N] [--no-flip] [--dtype float16]
    torchrun --nproc_per_node 8 tools/extract_latents.py ... --launcher pytorch

What is cached (RAE's recipe): the ADM centre crop of every image of the
config's ``{split}_dataloader`` dataset at the tokenizer's image size
(``AdmCenterCrop``, replacing the dataset's own, random, training
transform; ``--transform-from-config`` keeps it), its class label
(``data_samples['gt_label']``) and, unless ``--no-flip``, the latents of the
horizontally flipped crop. Stage 2 then trains on ``CachedLatentDataset(DIR,
use_flip=True)``, which picks the plain or the flipped latents at random.

Normalisation: with a statistics file (``--stats``, by default the config's
``model.tokenizer.latent_stats``) the latents written are *normalised*
(``meta.json``: ``"normalised": true``); ``--stats none`` writes raw
latents (``"normalised": false``).

Order and resuming: images are read in dataset order (no shuffling) and
written in shards of ``--shard-size``; rerunning the same command skips the
shards already on disk. A run with ``--max-images k`` is a complete,
readable folder of the first ``k`` images; rerunning with a larger (or no)
limit extends it (only its partial last shard is rewritten).

Several GPUs: rank ``r`` of ``W`` encodes images ``r, r + W, ...`` into
``DIR/rank_{r}`` (a resumable folder of its own); at the end rank 0 writes
``DIR/meta.json`` listing every rank's shards, so ``CachedLatentDataset(DIR)``
reads all of them (rank 0's images first, then rank 1's ...). Resume with
the same number of processes.

The same from Python: ``decq_plugin.apis.extract_latents`` (with
``build_extraction_tokenizer`` and ``build_extraction_dataset``).
"""
import argparse
import os.path as osp
import sys

import torch
from mmengine.config import DictAction
from mmengine.dist import get_dist_info

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from decq_plugin.apis.extraction_inputs import (  # noqa: E402,F401
    build_extraction_dataset as build_dataset, build_extraction_tokenizer,
    resolve_stats, set_center_crop, tokenizer_config)
from decq_plugin.apis.latent_extraction import (  # noqa: E402,F401
    DTYPES, extract_latents, extract_rank, merge_rank_folders, read_meta)
from decq_plugin.utils.preflight import preflight_or_exit  # noqa: E402
from decq_plugin.datasets.latent_dataset import (  # noqa: E402
    verify_folder, verify_summary)
from decq_plugin.utils.launch import (check_file, init_launcher,  # noqa: E402
                                      load_config)
from decq_plugin.utils.cli import doc_summary  # noqa: E402

CONFIG_TRANSFORM = 'config'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument('config', nargs='?',
                        help='stage-1 or stage-2 config')
    parser.add_argument('checkpoint', nargs='?', help="tokenizer checkpoint "
                        "(stage-1 AutoencoderModel or stage-2 model); 'none' "
                        'keeps the weights the config builds')
    parser.add_argument('--out-dir', help='latent folder')
    parser.add_argument('--verify', metavar='DIR',
                        help='only check the latent folder DIR: every shard '
                        'against the SHA-256 in its meta.json; exit code 1 '
                        'when one is damaged, missing or has no checksum')
    parser.add_argument('--allow-missing-checksums', action='store_true',
                        help='with --verify: shards without a checksum in '
                        'meta.json (older writers) pass unverified')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the per-sample randomness of a random '
                        'transform (--transform-from-config)')
    parser.add_argument('--stats', default=None,
                        help="latent statistics file (default: the config's "
                        "model.tokenizer.latent_stats); 'none' writes raw "
                        'latents')
    parser.add_argument('--split', choices=['train', 'val'], default='train',
                        help='which dataloader of the config to read')
    parser.add_argument('--batch-size', type=int, default=None,
                        help="default: the dataloader's")
    parser.add_argument('--num-workers', type=int, default=None,
                        help="default: the dataloader's")
    parser.add_argument('--shard-size', type=int, default=1024)
    parser.add_argument('--max-images', type=int, default=None,
                        help='encode only the first N images of the dataset')
    parser.add_argument('--no-flip', action='store_true',
                        help='do not store latents of flipped images')
    parser.add_argument('--dtype', choices=DTYPES, default='float16',
                        help='storage dtype')
    parser.add_argument('--file-format', choices=['safetensors', 'pt'],
                        default='safetensors')
    parser.add_argument('--transform-from-config', action='store_true',
                        help="keep the dataset's transform instead of the "
                        'ADM centre crop')
    parser.add_argument('--device', default=None)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'],
                        default='none')
    args = parser.parse_args(argv)
    if args.verify is None and not (args.config and args.checkpoint
                                    and args.out_dir):
        parser.error('CONFIG, CHECKPOINT and --out-dir are required '
                     '(or --verify DIR alone)')
    for name in ('batch_size', 'shard_size', 'max_images'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    if args.num_workers is not None and args.num_workers < 0:
        parser.error('--num-workers must be >= 0')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.verify is not None:
        problems = verify_folder(args.verify, args.allow_missing_checksums)
        for problem in problems:
            print(problem)
        if problems:
            sys.exit(1)
        print(verify_summary(args.verify))
        return read_meta(args.verify)
    init_launcher(args.launcher)
    rank, world_size = get_dist_info()
    checkpoint = None if args.checkpoint == 'none' else args.checkpoint
    preflight_or_exit('extract_latents.py', args.config, args.cfg_options, (f'data:{args.split}', 'model_files') + (() if checkpoint else ('vfm', )), {'checkpoint': checkpoint, 'latent statistics file (--stats)': None if str(args.stats).lower() == 'none' else args.stats}, weights_from_checkpoint=bool(checkpoint))  # noqa: E501
    if checkpoint:
        check_file(checkpoint, 'checkpoint')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda' and world_size > 1:
        device = f'cuda:{torch.cuda.current_device()}'

    cfg = load_config(args.config, args.cfg_options)
    stats = resolve_stats(args.stats, tokenizer_config(cfg))
    if stats:
        check_file(stats, 'latent statistics file')
    tokenizer = build_extraction_tokenizer(cfg, checkpoint, args.stats,
                                           device=device)

    dataset = build_dataset(cfg, args.split, tokenizer.image_size,
                            args.transform_from_config)
    loader_cfg = cfg[f'{args.split}_dataloader']
    settings = dict(
        split=args.split,
        transform=(CONFIG_TRANSFORM if args.transform_from_config else
                   f'AdmCenterCrop({tokenizer.image_size})'),
        checkpoint=checkpoint and osp.abspath(checkpoint),
        stats=stats and osp.abspath(stats))
    meta, done_now = extract_latents(
        tokenizer, dataset, args.out_dir, num_images=args.max_images,
        batch_size=args.batch_size or loader_cfg.get('batch_size', 64),
        num_workers=(args.num_workers if args.num_workers is not None else
                     loader_cfg.get('num_workers', 0)),
        shard_size=args.shard_size, dtype=args.dtype,
        flip=not args.no_flip, file_format=args.file_format,
        tokenizer_name=osp.splitext(osp.basename(args.config))[0],
        settings=settings, device=device, seed=args.seed)
    if rank == 0:
        kind = 'normalised' if meta['normalised'] else 'raw'
        print(f'{args.out_dir}: {meta["count"]} {kind} latents '
              f'{meta["latent_shapes"]} (+flip: {meta["has_flip"]}, '
              f'{meta["dtype"]}), {done_now} encoded now by rank 0; read '
              f"with dict(type='CachedLatentDataset', "
              f"data_root='{args.out_dir}')")
    return meta


if __name__ == '__main__':
    main()
