"""Class-balanced samples of a stage-2 model, as PNGs and an ADM ``.npz``.

    python tools/sample.py CONFIG CHECKPOINT --out-dir DIR \
        [--num-per-class 50] [--classes 0 1 ...] [--batch-size 64] \
        [--seed 0] [--num-steps 49] [--guidance-scale 1.5] [--no-png] \
        [--precision {fp32,tf32,bf16}] [--compile]
    torchrun --nproc_per_node 8 tools/sample.py ... --launcher pytorch

``num_per_class`` samples of each class (default classes ``0 ..
num_classes - 1``) in a seeded random class order, as RAE's sampler writes
them (``--sorted-classes``: sample ``i`` has class ``classes[i //
num_per_class]``); sample ``i`` starts from noise seeded with ``seed + i``
(``ClassLabelDataset``'s convention), so a sample does not depend on the
batch size, the number of GPUs or interruptions: images made in different
batches agree up to float rounding (at most one 8-bit level, rarely). Rank
``r`` of ``W`` makes samples ``r, r + W, ...``. Pixels become 8-bit by
truncation, ``(x.clamp(0, 1) * 255).to(uint8)`` as the ADM and RAE samplers
(``--rounding round``: the nearest level).

Output::

    DIR/sampling.json           the settings; a rerun must match them
    DIR/samples/{i:06d}.png     one file per sample (written atomically;
                                existing ones are skipped when resuming)
    DIR/samples.npz             (``--npz``) ADM layout: ``arr_0`` uint8
                                [N, H, W, 3] in sample order, ``arr_1``
                                int64 [N] labels (ignored by the evaluator)

Weights: the checkpoint's ``state_dict`` (the EMA weights when training used
``EMAHook``; ``--raw-weights`` overlays the raw ones from
``ema_state_dict``). Parts the checkpoint holds (the tokenizer and its latent
statistics, an autoguidance guide, a ``decode_with`` decoder) are taken from
it, so the config's separate files for them are not read; parts it lacks
(e.g. the guide of an autoguidance config) are built from the config's files.

Precision: ``--precision`` (default bf16 autocast on GPUs with native bf16,
fp32 elsewhere; the ODE state stays float32); ``--compile`` compiles the
denoiser and decoder blocks (``decq_plugin.apis.precision``).

The same from Python: ``decq_plugin.apis.load_sampling_model`` and
``decq_plugin.apis.sample_to_npz``.

``--metrics --reference REF`` then computes FID/sFID/IS/precision/recall of
the ``.npz``, as the ADM evaluator does (``decq_plugin.evaluation.metrics.generation.evaluate_samples_npz``).
"""
import argparse
import os.path as osp
import sys

import torch
from mmengine.config import DictAction
from mmengine.dist import get_dist_info

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from decq_plugin.apis.precision import INFERENCE_PRECISIONS  # noqa: E402
from decq_plugin.apis.sampling import (describe_guidance,  # noqa: E402,F401
                                       pack_npz, sample_to_npz)
from decq_plugin.apis.sampling_model import (  # noqa: E402,F401
    apply_sampling_options, load_sampling_model, read_checkpoint_state,
    use_checkpoint_parts)
from decq_plugin.utils.images import ROUNDING_MODES  # noqa: E402
from decq_plugin.utils.launch import (check_file, init_launcher,  # noqa: E402
                                      load_config)
from decq_plugin.utils.preflight import preflight_or_exit  # noqa: E402
from decq_plugin.utils.cli import doc_summary  # noqa: E402

METRIC_NAMES = ('fid', 'is', 'precision', 'recall', 'sfid')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument('config', help='stage-2 config')
    parser.add_argument('checkpoint', help='stage-2 checkpoint')
    parser.add_argument('--out-dir', required=True,
                        help='folder of the PNGs and the .npz')
    parser.add_argument('--num-per-class', type=int, default=50,
                        help='samples per class (default: 50, i.e. 50,000 '
                        'for 1,000 classes, the FID-50K protocol)')
    parser.add_argument('--num-classes', type=int, default=None,
                        help="classes 0..K-1 (default: the model's)")
    parser.add_argument('--classes', type=int, nargs='+', default=None,
                        help='explicit class list (wins over --num-classes)')
    parser.add_argument('--batch-size', type=int, default=64,
                        help='samples per forward batch, per process '
                        '(default: 64; CFG doubles it inside)')
    parser.add_argument('--seed', type=int, default=0,
                        help='noise seed of sample 0 (sample i: seed + i) '
                        'and seed of the class order')
    parser.add_argument('--sorted-classes', action='store_true',
                        help='samples sorted by class instead of the seeded '
                        'random order (the IS splits then see few classes)')
    parser.add_argument('--rounding', choices=ROUNDING_MODES,
                        default='truncate', help='8-bit conversion: '
                        "'truncate' as ADM / RAE, or 'round'")
    parser.add_argument('--num-steps', type=int, default=None,
                        help='ODE steps (the sampler has steps + 1 time '
                        "points; RAE: 50 points = 49 steps); default: the "
                        "config's")
    parser.add_argument('--guidance-scale', '--cfg-scale', type=float,
                        default=None, help="scale of the config's guidance;"
                        ' adds classifier-free guidance when it has none')
    parser.add_argument('--guidance-interval', type=float, nargs=2,
                        default=None, metavar=('T_MIN', 'T_MAX'),
                        help='apply guidance only for flow times in '
                        "[T_MIN, T_MAX] (default: the config's)")
    parser.add_argument('--raw-weights', action='store_true',
                        help='use the raw (non-EMA) weights')
    parser.add_argument('--png', action=argparse.BooleanOptionalAction,
                        default=True, help='keep the PNGs after packing the'
                        ' .npz (--no-png deletes them)')
    parser.add_argument('--npz', default=None,
                        help='the ADM .npz (default DIR/samples.npz)')
    parser.add_argument('--no-npz', action='store_true',
                        help='write PNGs only')
    parser.add_argument('--metrics', action='store_true',
                        help='evaluate the .npz against --reference')
    parser.add_argument('--reference', default=None,
                        help='ADM reference batch .npz or an image folder')
    parser.add_argument('--metric-names', nargs='+', choices=METRIC_NAMES,
                        default=list(METRIC_NAMES),
                        help='metrics of --metrics (default: all)')
    parser.add_argument('--inception-weights', default=None,
                        help='local FID Inception-v3 weights file')
    parser.add_argument('--feature-extractor', default=None,
                        help='MODELS type of the feature extractor (default '
                        'InceptionV3FeatureExtractor)')
    parser.add_argument('--device', default=None,
                        help="e.g. 'cuda:1' or 'cpu' (default: the "
                        "process's GPU, else the CPU)")
    parser.add_argument('--precision', choices=INFERENCE_PRECISIONS,
                        default=None, help='default: bf16 on GPUs with '
                        'native bf16, else fp32')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the denoiser and decoder blocks')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, KEY=VALUE ...')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'],
                        default='none',
                        help='several processes: pytorch (torchrun) or slurm '
                        '(srun); process r makes samples r, r + N, ...')
    args = parser.parse_args(argv)
    for name in ('num_per_class', 'num_classes', 'batch_size', 'num_steps'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    if args.no_npz and (args.metrics or not args.png):
        parser.error('--metrics and --no-png need the .npz (drop --no-npz)')
    if args.metrics and args.reference is None and set(
            args.metric_names) - {'is'}:
        parser.error(f'--metrics {args.metric_names} needs --reference')
    return args


def run_metrics(args, npz_path: str) -> dict:
    from decq_plugin.evaluation.metrics.generation import \
        evaluate_samples_npz
    extractor = None
    if args.feature_extractor or args.inception_weights:
        extractor = dict(type=args.feature_extractor
                         or 'InceptionV3FeatureExtractor')
        if args.inception_weights:
            extractor['weights_path'] = args.inception_weights
    return evaluate_samples_npz(npz_path, args.reference, extractor,
                                metrics=args.metric_names,
                                device=args.device)


def main(argv=None) -> dict:
    args = parse_args(argv)
    init_launcher(args.launcher)
    rank, world_size = get_dist_info()
    preflight_or_exit('sample.py', args.config, args.cfg_options, ('model_files', ), {'checkpoint': args.checkpoint, '--reference': args.reference}, inception=args.metrics and not args.feature_extractor and (args.inception_weights or True), weights_from_checkpoint=True)  # noqa: E501
    check_file(args.checkpoint, 'checkpoint')
    if args.reference is not None and not osp.exists(args.reference):
        raise FileNotFoundError(f'--reference {args.reference!r} not found')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda' and world_size > 1:
        device = f'cuda:{torch.cuda.current_device()}'

    cfg = load_config(args.config, args.cfg_options)
    model = load_sampling_model(
        cfg, args.checkpoint, num_steps=args.num_steps,
        guidance_scale=args.guidance_scale,
        guidance_interval=args.guidance_interval,
        raw_weights=args.raw_weights, device=device)

    settings = dict(config=osp.abspath(args.config),
                    checkpoint=osp.abspath(args.checkpoint),
                    raw_weights=args.raw_weights,
                    cfg_options=args.cfg_options or {})
    result = sample_to_npz(
        model, args.out_dir, classes=args.classes,
        num_classes=args.num_classes, num_per_class=args.num_per_class,
        batch_size=args.batch_size, seed=args.seed,
        shuffle_classes=not args.sorted_classes, rounding=args.rounding,
        npz=args.npz, write_npz=not args.no_npz, keep_png=args.png,
        precision=args.precision, compile=args.compile, device=device,
        settings=settings)
    classes = result.pop('classes')
    if rank != 0:
        return result
    print(f'{len(classes) * args.num_per_class} samples ({len(classes)} '
          f'classes x {args.num_per_class}) at {model.image_size}px, '
          f'{model.sampler.num_steps} steps, guidance '
          f'{describe_guidance(model.guidance)}, seed {args.seed}: '
          f"{result['made_by_rank0']} made by rank 0 in "
          f"{result['seconds']:.1f}s -> "
          f"{result.get('npz') or osp.join(args.out_dir, 'samples')}")
    if args.metrics:
        result['metrics'] = run_metrics(args, result['npz'])
        print('metrics: ' + ', '.join(
            f'{k}={v:.4f}' if isinstance(v, float) else f'{k}={v}'
            for k, v in result['metrics'].items()))
    return result


if __name__ == '__main__':
    main()
