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

``--metrics --reference REF`` then computes FID/sFID/IS/precision/recall of
the ``.npz``, as the ADM evaluator does (``decq_plugin.evaluation.metrics.generation.evaluate_samples_npz``).
"""
import argparse
import json
import logging
import os
import os.path as osp
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from decq_plugin.apis import build_model_from_config  # noqa: E402
from decq_plugin.apis.precision import (  # noqa: E402
    INFERENCE_PRECISIONS, default_inference_precision, inference_precision,
    prepare_inference)
from decq_plugin.datasets.class_labels import ClassLabelDataset  # noqa: E402
from decq_plugin.utils.preflight import preflight_or_exit  # noqa: E402
from decq_plugin.engine.checkpoint import (  # noqa: E402
    CheckpointFormatError, StateDictMismatchError, safe_load_checkpoint)
from decq_plugin.utils.launch import (check_file, init_launcher,  # noqa: E402
                                      load_config)
from decq_plugin.utils.images import (ROUNDING_MODES,  # noqa: E402
                                      to_uint8 as quantize)
from decq_plugin.utils.npz import save_npz_streamed  # noqa: E402
from decq_plugin.utils.cli import doc_summary  # noqa: E402

METRIC_NAMES = ('fid', 'is', 'precision', 'recall', 'sfid')
SETTINGS_FILE = 'sampling.json'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument('config', help='stage-2 config')
    parser.add_argument('checkpoint', help='stage-2 checkpoint')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--num-per-class', type=int, default=50)
    parser.add_argument('--num-classes', type=int, default=None,
                        help="classes 0..K-1 (default: the model's)")
    parser.add_argument('--classes', type=int, nargs='+', default=None,
                        help='explicit class list (wins over --num-classes)')
    parser.add_argument('--batch-size', type=int, default=64)
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
                        default=None, metavar=('T_MIN', 'T_MAX'))
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
                        default=list(METRIC_NAMES))
    parser.add_argument('--inception-weights', default=None,
                        help='local FID Inception-v3 weights file')
    parser.add_argument('--feature-extractor', default=None,
                        help='MODELS type of the feature extractor (default '
                        'InceptionV3FeatureExtractor)')
    parser.add_argument('--device', default=None)
    parser.add_argument('--precision', choices=INFERENCE_PRECISIONS,
                        default=None, help='default: bf16 on GPUs with '
                        'native bf16, else fp32')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the denoiser and decoder blocks')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'],
                        default='none')
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


# -- config overrides ---------------------------------------------------------
def apply_sampling_options(cfg, num_steps: Optional[int],
                           scale: Optional[float],
                           interval: Optional[Sequence[float]]) -> None:
    """Write ``--num-steps`` and the guidance options into ``cfg.model``."""
    model = cfg.model
    if num_steps is not None:
        model.sampler['num_points'] = num_steps + 1
    if scale is None and interval is None:
        return
    guidance = model.get('guidance')
    if guidance is None:
        if scale is None:
            raise ValueError('--guidance-interval needs guidance: give '
                             '--guidance-scale or a config with guidance')
        guidance = dict(type='ClassifierFreeGuidance')
    guidance = dict(guidance)
    if scale is not None:
        guidance['scale'] = scale
    if interval is not None:
        guidance['interval'] = tuple(interval)
    model['guidance'] = guidance


def read_checkpoint_state(path: str, raw: bool = False
                          ) -> Dict[str, torch.Tensor]:
    """The model state dict of a training checkpoint (``state_dict``; with
    ``raw``, overlaid by the ``module.*`` entries of ``ema_state_dict``)."""
    checkpoint = safe_load_checkpoint(path)
    state = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state, dict) or not state or not all(
            torch.is_tensor(v) for v in state.values()):
        raise CheckpointFormatError(
            f'{path!r} holds no state dict of tensors (top-level keys: '
            f'{sorted(map(str, checkpoint))[:20]})')
    state = dict(state)
    if raw:
        ema = checkpoint.get('ema_state_dict')
        if not isinstance(ema, dict):
            raise CheckpointFormatError(
                f'--raw-weights: {path!r} has no ema_state_dict (was the '
                'model trained without EMAHook? then drop --raw-weights)')
        state.update({k[len('module.'):]: v for k, v in ema.items()
                      if k.startswith('module.')})
    return state


def _holds(state: Dict[str, torch.Tensor], prefix: str) -> bool:
    return any(k.startswith(prefix + '.') for k in state)


def _weights_from_checkpoint(tokenizer_cfg) -> None:
    """No statistics file and no VFM download for a tokenizer whose
    weights (normaliser buffers included) come from the checkpoint."""
    tokenizer_cfg['latent_stats'] = None
    encoder = tokenizer_cfg.get('encoder')
    if isinstance(encoder, dict) and encoder.get('pretrained'):
        encoder['pretrained'] = False


def describe_guidance(guidance) -> str:
    if guidance is None:
        return 'none'
    return f'{type(guidance).__name__}({guidance.extra_repr()})'


def use_checkpoint_parts(model_cfg, state: Dict[str, torch.Tensor]
                         ) -> List[str]:
    """Clear the config's file entries of the parts that ``state`` holds
    (their weights come from the checkpoint); return the prefixes of the
    parts built from the config's own files instead."""
    from_files = []
    if _holds(state, 'tokenizer'):
        model_cfg['tokenizer_ckpt'] = None
        _weights_from_checkpoint(model_cfg['tokenizer'])
    elif model_cfg.get('tokenizer_ckpt'):
        from_files.append('tokenizer')
    guidance = model_cfg.get('guidance')
    if guidance is not None and 'guide_ckpt' in guidance:
        if _holds(state, 'guidance'):
            guidance['guide_ckpt'] = None
        elif guidance['guide_ckpt']:
            from_files.append('guidance')
    decode_with = model_cfg.get('decode_with')
    if decode_with is not None:
        if _holds(state, 'rae_decoder'):
            decode_with['ckpt'] = None
            _weights_from_checkpoint(decode_with['tokenizer'])
        elif decode_with.get('ckpt'):
            from_files.append('rae_decoder')
    return from_files


def load_sampling_weights(model: torch.nn.Module,
                          state: Dict[str, torch.Tensor],
                          from_files: Sequence[str], path: str) -> None:
    """Load ``state`` into ``model``. Every key must be there except those
    of the parts in ``from_files``; a guide the model lacks is ignored."""
    own = model.state_dict()
    skip = tuple(p + '.' for p in from_files)
    missing = [k for k in own if k not in state and not k.startswith(skip)]
    unexpected = [k for k in state if k not in own]
    ignored = [k for k in unexpected if k.startswith('guidance.')]
    unexpected = [k for k in unexpected if k not in ignored]
    shapes = [f'{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}'
              for k, v in own.items() if k in state
              and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise StateDictMismatchError(
            f'{path!r} does not fit the model of the config: missing '
            f'{missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} '
            f'({len(unexpected)}), shapes {shapes[:5]}')
    if ignored:
        print_log(f'{path!r}: {len(ignored)} guidance weights ignored (the '
                  'config samples without that guide)', logger='current',
                  level=logging.WARNING)
    model.load_state_dict({k: v for k, v in state.items() if k in own},
                          strict=False)


# -- output files -------------------------------------------------------------
def png_path(sample_dir: str, index: int) -> str:
    return osp.join(sample_dir, f'{index:06d}.png')


def to_uint8(images: torch.Tensor, rounding: str = 'truncate') -> np.ndarray:
    """[B,3,H,W] in [0,1] -> uint8 [B,H,W,3] (truncated as ADM / RAE)."""
    return quantize(images, rounding).permute(0, 2, 3, 1).cpu().numpy()


def save_png(array: np.ndarray, path: str) -> None:
    """Write uint8 [H,W,3] to ``path`` via a temporary file and a rename."""
    tmp = path + '.tmp'
    Image.fromarray(array).save(tmp, format='PNG')
    os.replace(tmp, path)


def check_settings(out_dir: str, settings: dict, write: bool) -> None:
    """Compare ``settings`` with ``DIR/sampling.json`` (write it when it is
    missing and ``write``); PNGs of other settings must not be mixed in."""
    path = osp.join(out_dir, SETTINGS_FILE)
    settings = json.loads(json.dumps(settings))  # tuples -> lists
    if osp.isfile(path):
        with open(path) as f:
            stored = json.load(f)
        differ = sorted(k for k in set(stored) | set(settings)
                        if stored.get(k) != settings.get(k))
        if differ:
            changes = '; '.join(f'{k}: {stored.get(k)!r} there, now '
                                f'{settings.get(k)!r}' for k in differ)
            raise ValueError(f'{out_dir} holds samples made with other '
                             f'settings ({changes}); use another --out-dir')
    elif write:
        os.makedirs(out_dir, exist_ok=True)
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(settings, f, indent=1)
        os.replace(tmp, path)


def iter_png_chunks(sample_dir: str, count: int, shape: tuple,
                    chunk: int = 256) -> Iterator[np.ndarray]:
    """uint8 [n, H, W, 3] chunks of the PNGs 0..count-1, in order."""
    for start in range(0, count, chunk):
        arrays = []
        for i in range(start, min(count, start + chunk)):
            with Image.open(png_path(sample_dir, i)) as img:
                array = np.asarray(img.convert('RGB'))
            if array.shape != shape:
                raise ValueError(f'{png_path(sample_dir, i)} is '
                                 f'{array.shape}, expected {shape}')
            arrays.append(array)
        yield np.stack(arrays)


def pack_npz(sample_dir: str, labels: Sequence[int], path: str) -> tuple:
    """Pack the PNGs of ``sample_dir`` into the ADM ``.npz`` at ``path``;
    returns the shape of ``arr_0``."""
    missing = [i for i in range(len(labels))
               if not osp.isfile(png_path(sample_dir, i))]
    if missing:
        raise FileNotFoundError(f'{len(missing)} samples are missing from '
                                f'{sample_dir}, e.g. {missing[:5]}; rerun to '
                                'make them')
    with Image.open(png_path(sample_dir, 0)) as img:
        shape = (img.height, img.width, 3)
    full = (len(labels), ) + shape
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    save_npz_streamed(path, full, iter_png_chunks(sample_dir, len(labels),
                                                  shape),
                      extra={'arr_1': np.asarray(labels, dtype=np.int64)})
    return full


# -- the work -----------------------------------------------------------------
@torch.no_grad()
def sample_rank(model, labels: ClassLabelDataset, sample_dir: str, *,
                rank: int = 0, world_size: int = 1, batch_size: int = 64,
                device: str = 'cpu', progress: bool = True,
                rounding: str = 'truncate') -> int:
    """Make the missing PNGs of samples ``rank, rank + world_size, ...``;
    returns how many were made."""
    os.makedirs(sample_dir, exist_ok=True)
    todo = [i for i in range(rank, len(labels), world_size)
            if not osp.isfile(png_path(sample_dir, i))]
    bar = tqdm(total=len(todo), unit='img', disable=not progress,
               desc='sampling')
    for start in range(0, len(todo), batch_size):
        indices = todo[start:start + batch_size]
        items = [labels[i]['data_samples'] for i in indices]
        y = torch.tensor([it['gt_label'] for it in items], device=device)
        seeds = torch.tensor([it['seed'] for it in items])
        noise = model.make_noise(len(indices), device=device, seeds=seeds)
        images = to_uint8(model.sample(y, noise=noise), rounding)
        for i, image in zip(indices, images):
            save_png(image, png_path(sample_dir, i))
        bar.update(len(indices))
    bar.close()
    return len(todo)


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
    apply_sampling_options(cfg, args.num_steps, args.guidance_scale,
                           args.guidance_interval)
    state = read_checkpoint_state(args.checkpoint, args.raw_weights)
    from_files = use_checkpoint_parts(cfg.model, state)
    model = build_model_from_config(cfg, None, device='cpu')
    load_sampling_weights(model, state, from_files, args.checkpoint)
    del state
    model = model.to(device).eval()
    precision = args.precision or default_inference_precision(device)
    prepare_inference(model, args.compile)

    if args.classes is not None:
        classes = list(args.classes)
    else:
        classes = list(range(args.num_classes or model.num_classes))
    bad = [c for c in classes if not 0 <= c < model.num_classes]
    if bad:
        raise ValueError(f'classes {bad[:5]} are outside the model\'s '
                         f'0..{model.num_classes - 1}')
    labels = ClassLabelDataset(classes=classes,
                               num_per_class=args.num_per_class,
                               seed=args.seed,
                               shuffle=not args.sorted_classes)
    settings = dict(
        config=osp.abspath(args.config),
        checkpoint=osp.abspath(args.checkpoint),
        raw_weights=args.raw_weights, seed=args.seed,
        num_per_class=args.num_per_class, classes=classes,
        class_order='sorted' if args.sorted_classes else 'random',
        rounding=args.rounding,
        image_size=model.image_size, sampler=repr(model.sampler),
        guidance=describe_guidance(model.guidance),
        cfg_options=args.cfg_options or {}, precision=precision)
    check_settings(args.out_dir, settings, write=rank == 0)
    barrier()

    sample_dir = osp.join(args.out_dir, 'samples')
    tic = time.time()
    with inference_precision(precision, device):
        made = sample_rank(model, labels, sample_dir, rank=rank,
                           world_size=world_size,
                           batch_size=args.batch_size, device=device,
                           progress=rank == 0, rounding=args.rounding)
    seconds = time.time() - tic
    barrier()
    result = dict(num_samples=len(labels), made_by_rank0=made,
                  seconds=seconds, precision=precision)
    if rank != 0:
        return result
    all_labels = labels.labels
    npz = None
    if not args.no_npz:
        npz = args.npz or osp.join(args.out_dir, 'samples.npz')
        result['shape'] = pack_npz(sample_dir, all_labels, npz)
        result['npz'] = npz
        if not args.png:
            for i in range(len(labels)):
                os.remove(png_path(sample_dir, i))
    print(f'{len(labels)} samples ({len(classes)} classes x '
          f'{args.num_per_class}) at {model.image_size}px, '
          f'{model.sampler.num_steps} steps, guidance '
          f'{describe_guidance(model.guidance)}, seed '
          f'{args.seed}: {made} made by rank 0 in {seconds:.1f}s -> '
          f'{npz or sample_dir}')
    if args.metrics:
        result['metrics'] = run_metrics(args, npz)
        print('metrics: ' + ', '.join(
            f'{k}={v:.4f}' if isinstance(v, float) else f'{k}={v}'
            for k, v in result['metrics'].items()))
    return result


if __name__ == '__main__':
    main()
