r"""Compare tokenizers on one dataset: PSNR, SSIM, rFID, LPIPS, encode and
decode throughput, parameters and FLOPs, written as a Markdown table, CSV,
JSON and (given gFIDs) the reconstruction-vs-generation trade-off plot.

    # built-in comparison: each tiny tokenizer trained with the same short
    # budget on the bundled photos (same frozen VFM, 3 seeds), then scored
    # (CPU, offline, a few minutes)
    python tools/benchmark_tokenizers.py --suite builtin --train
    # the same tokenizers with random weights: a pipeline check (about
    # 2 minutes of CPU time)
    python tools/benchmark_tokenizers.py --suite builtin
    # a paper table (configs/benchmark/*.json; see configs/README.md)
    python tools/benchmark_tokenizers.py --suite table3_paradigms \
        --data-root data/imagenet --generation gfid.json
    # any list of tokenizers (checkpoint 'none': random weights)
    python tools/benchmark_tokenizers.py \
        --tokenizer RAE configs/rae/...py work_dirs/rae/epoch_16.pth \
        --tokenizer DecQ configs/decq/...py work_dirs/decq/epoch_16.pth \
        --dataset imagenet --data-root data/imagenet --num-images 50000
    python tools/benchmark_tokenizers.py --list-suites

Outputs in --out-dir (default work_dirs/benchmark/<suite>): benchmark.md,
benchmark.csv, benchmark.json, tradeoff.png (when gFIDs are known) and
results/<tokenizer>.json, one per tokenizer. A rerun skips the tokenizers
whose config, checkpoint (path, mtime, size) and data settings are
unchanged (their throughput is measured again, so that every timing of a
table comes from one run; --reuse-timing keeps stored timings); --force
recomputes everything.

Before any tokenizer is evaluated, everything the run needs is checked and
every problem is reported at once with the flag that fixes it: checkpoints
(--checkpoint NAME=PATH), the dataset (--data-root, --image-size), the
metric networks (--lpips-trunk-weights or, offline, --lpips-random-trunk;
--inception-weights or, offline, --feature-extractor
RandomConvFeatureExtractor) and the VFM of random-weight tokenizers
(--encoder-weights).
"""
import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from decq_plugin.benchmark.report import (  # noqa: E402
    read_generation_results, write_reports)
from decq_plugin.benchmark.runner import SuiteRunner  # noqa: E402
from decq_plugin.benchmark.suite import (  # noqa: E402
    AUTOCAST_CHOICES, METRIC_NAMES, BenchmarkSuite, SuiteError,
    TokenizerEntry, available_suites, load_suite, normalize_checkpoint,
    parse_assignments, select, set_checkpoints, set_image_size, validate)
from decq_plugin.evaluation.inception import (  # noqa: E402
    InceptionWeightsError)
from decq_plugin.utils.cli import doc_summary  # noqa: E402

DATASET_KINDS = ('imagenet', 'folder', 'demo')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=doc_summary(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 1)[1])
    what = parser.add_argument_group('what to compare')
    what.add_argument('--suite', help='suite name (see --list-suites) or a '
                      'suite JSON file')
    what.add_argument('--tokenizer', nargs=3, action='append', default=[],
                      metavar=('NAME', 'CONFIG', 'CHECKPOINT'),
                      help="a tokenizer to compare (repeatable); CHECKPOINT "
                      "'none' keeps random weights")
    what.add_argument('--checkpoint', action='append', default=[],
                      metavar='NAME=PATH', help="checkpoint of a suite's "
                      "tokenizer ('none': random weights); repeatable")
    what.add_argument('--only', nargs='+', metavar='NAME',
                      help='evaluate only these tokenizers of the suite')
    what.add_argument('--generation', metavar='JSON',
                      help='gFID per tokenizer name ({"RAE": 2.16, ...}) for '
                      'the table and the trade-off plot')
    what.add_argument('--list-suites', action='store_true')
    data = parser.add_argument_group('data (override the suite)')
    data.add_argument('--dataset', choices=DATASET_KINDS, default='imagenet',
                      help='dataset of a --tokenizer list without --suite: '
                      'ImageNet val, any image folder, or the bundled photos')
    data.add_argument('--data-root', help='dataset folder')
    data.add_argument('--image-size', type=int,
                      help='side of the (ADM centre-cropped) images; must '
                      'be what the tokenizers reconstruct (default: the '
                      "suite's, 256 for a --tokenizer list)")
    data.add_argument('--num-images', type=int,
                      help='use the first N images')
    data.add_argument('--batch-size', type=int)
    data.add_argument('--num-workers', type=int)
    metrics = parser.add_argument_group('metrics (override the suite)')
    metrics.add_argument('--metrics', nargs='+', choices=METRIC_NAMES)
    metrics.add_argument('--feature-extractor', metavar='TYPE',
                         help='rFID features: InceptionV3FeatureExtractor '
                         '(default) or RandomConvFeatureExtractor (offline, '
                         'not comparable)')
    metrics.add_argument('--inception-weights', metavar='PATH',
                         help='local weights-inception-2015-12-05-6726825d'
                         '.pth for rFID')
    metrics.add_argument('--lpips-net', choices=('vgg', 'alex'))
    metrics.add_argument('--lpips-trunk-weights', metavar='PATH',
                         help='local torchvision vgg16-397923af.pth (or '
                         'alexnet-owt-7be5be79.pth with --lpips-net alex)')
    metrics.add_argument('--lpips-random-trunk', action='store_true',
                         help='offline LPIPS with a random trunk: NOT '
                         'comparable with published LPIPS')
    weights = parser.add_argument_group('tokenizer weights')
    weights.add_argument('--encoder-weights', metavar='PATH',
                         help='local pretrained VFM weights (e.g. '
                         'model.safetensors of timm/vit_base_patch14_reg4_'
                         'dinov2.lvd142m) for the tokenizers without a '
                         'checkpoint (random decoder); tokenizers with a '
                         'checkpoint read the VFM from it')
    timing = parser.add_argument_group('throughput (override the suite)')
    timing.add_argument('--throughput-batch', type=int)
    timing.add_argument('--warmup', type=int)
    timing.add_argument('--repeats', type=int)
    train = parser.add_argument_group(
        'training (train every tokenizer first, same budget and seeds)')
    train.add_argument('--train', action='store_true',
                       help="train with the suite's \"train\" budget "
                       '(benchmark/training.py) before scoring; metrics are '
                       'means over the seeds, with their spread')
    train.add_argument('--train-iters', type=int,
                       help='training steps per tokenizer (implies --train)')
    train.add_argument('--train-seeds', type=int, nargs='+',
                       help='seeds to train and average over (implies '
                       '--train)')
    run = parser.add_argument_group('run')
    run.add_argument('--out-dir', help='default: work_dirs/benchmark/<suite>')
    run.add_argument('--device', help='default: cuda when available')
    run.add_argument('--autocast', choices=AUTOCAST_CHOICES)
    run.add_argument('--seed', type=int,
                     help='seed of random-weight tokenizers')
    run.add_argument('--force', action='store_true',
                     help='recompute every tokenizer')
    run.add_argument('--reuse-timing', action='store_true',
                     help='keep the stored throughput of finished '
                     'tokenizers when measured with the same settings and '
                     'device (timings may then come from different runs)')
    run.add_argument('--no-progress', action='store_true')
    args = parser.parse_args(argv)
    for name in ('num_images', 'batch_size', 'throughput_batch', 'repeats',
                 'image_size', 'train_iters'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    for name in ('num_workers', 'warmup'):
        value = getattr(args, name)
        if value is not None and value < 0:
            parser.error(f'--{name.replace("_", "-")} must be >= 0')
    if not (args.list_suites or args.suite or args.tokenizer):
        parser.error('give --suite NAME or one or more --tokenizer NAME '
                     'CONFIG CHECKPOINT (or --list-suites)')
    if args.lpips_random_trunk and args.lpips_trunk_weights:
        parser.error('--lpips-random-trunk and --lpips-trunk-weights '
                     'exclude each other')
    return args


def adhoc_dataset(kind: str, data_root, image_size: int) -> dict:
    """Dataset config of a --tokenizer list (ADM centre crop)."""
    if kind == 'demo':
        return dict(type='DemoImageDataset', mode='val',
                    image_size=image_size)
    crop = dict(type='AdmCenterCrop', size=image_size)
    if kind == 'imagenet':
        return dict(type='ImageNetDataset', split='val', transform=crop,
                    data_root=data_root or 'data/imagenet')
    if data_root is None:
        raise SuiteError('--dataset folder needs --data-root')
    return dict(type='ImageFolderDataset', data_root=data_root,
                transform=crop)


def build_suite(args: argparse.Namespace) -> BenchmarkSuite:
    """The suite named by --suite and/or --tokenizer, with the command
    line's overrides applied."""
    entries = [TokenizerEntry(name=n, config=c,
                              checkpoint=normalize_checkpoint(p))
               for n, c, p in args.tokenizer]
    if args.suite:
        suite = load_suite(args.suite)
        suite.tokenizers += entries
    else:
        suite = BenchmarkSuite(
            name='tokenizers', title='Tokenizer benchmark',
            dataset=adhoc_dataset(args.dataset, args.data_root,
                                  args.image_size or 256),
            tokenizers=entries, root='.')
    select(suite, args.only)
    set_checkpoints(suite, parse_assignments(args.checkpoint,
                                             '--checkpoint'))
    if args.data_root and args.suite:
        if 'data_root' not in suite.dataset:
            raise SuiteError(f"--data-root: the suite's dataset "
                             f"({suite.dataset['type']}) has no data_root")
        suite.dataset['data_root'] = args.data_root
    if args.image_size and args.suite:
        set_image_size(suite, args.image_size)
    if args.encoder_weights:
        suite.encoder_weights = args.encoder_weights
    for name in ('num_images', 'batch_size', 'num_workers', 'metrics',
                 'autocast', 'seed'):
        if getattr(args, name) is not None:
            setattr(suite, name, getattr(args, name))
    for arg, key in (('throughput_batch', 'batch_size'),
                     ('warmup', 'warmup'), ('repeats', 'repeats')):
        if getattr(args, arg) is not None:
            suite.throughput[key] = getattr(args, arg)
    if args.feature_extractor or args.inception_weights:
        extractor = dict(type=args.feature_extractor or
                         'InceptionV3FeatureExtractor')
        if args.inception_weights:
            extractor['weights_path'] = args.inception_weights
        suite.rfid = dict(feature_extractor=extractor)
    if args.lpips_net:
        suite.lpips['net'] = args.lpips_net
    if args.lpips_trunk_weights:
        suite.lpips.update(pretrained_trunk=True,
                           trunk_weights_path=args.lpips_trunk_weights)
    if args.lpips_random_trunk:
        suite.lpips.update(pretrained_trunk=False, trunk_weights_path=None)
    if args.train or args.train_iters or args.train_seeds:
        suite.enable_training(iters=args.train_iters, seeds=args.train_seeds)
    validate(suite)
    return suite


def list_suites() -> str:
    lines = []
    for name in available_suites():
        suite = load_suite(name)
        lines.append(f'{name:24s} {len(suite.tokenizers):2d} tokenizers  '
                     f'{suite.title}')
    return '\n'.join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.list_suites:
        print(list_suites())
        return {}
    start = time.time()
    suite = build_suite(args)
    out_dir = args.out_dir or osp.join('work_dirs', 'benchmark', suite.name)
    gfid = {e.name: e.gfid for e in suite.tokenizers if e.gfid is not None}
    if args.generation:
        gfid.update(read_generation_results(args.generation))
    runner = SuiteRunner(suite, out_dir, device=args.device,
                         force=args.force, reuse_timing=args.reuse_timing,
                         progress=not args.no_progress)
    results = runner.run()
    settings = dict(suite.data_settings(), batch_size=suite.batch_size,
                    throughput=suite.throughput, seed=suite.seed,
                    suite=suite.name, suite_file=suite.path)
    title = suite.title or suite.name
    paths = write_reports(out_dir, title, settings, results, gfid,
                          {e.name: e.paper for e in suite.tokenizers},
                          extra=dict(run_id=runner.run_id))
    seconds = time.time() - start
    with open(paths['markdown'], encoding='utf-8') as f:
        print('\n' + f.read())
    print(f'{len(results)} tokenizers in {seconds:.1f}s; wrote '
          + ', '.join(paths.values()))
    return dict(results=results, paths=paths, seconds=seconds,
                out_dir=out_dir)


if __name__ == '__main__':
    try:
        main()
    except (SuiteError, FileNotFoundError, InceptionWeightsError) as err:
        sys.exit(f'error: {err}')
