"""Class-balanced samples of a stage-2 model, as PNGs and an ADM ``.npz``.

    model = load_sampling_model(config, checkpoint, device='cuda')
    result = sample_to_npz(model, 'samples/run1', num_per_class=50)
    result['npz']  # 'samples/run1/samples.npz'

``num_per_class`` samples of each class (default classes ``0 ..
num_classes - 1``) in a seeded random class order, as RAE's sampler writes
them (``shuffle_classes=False``: sample ``i`` has class ``classes[i //
num_per_class]``); sample ``i`` starts from noise seeded with ``seed + i``
(``ClassLabelDataset``'s convention), so a sample does not depend on the
batch size, the number of GPUs or interruptions. Rank ``r`` of ``W`` (in an
initialised ``torch.distributed`` run) makes samples ``r, r + W, ...``.
Pixels become 8-bit by truncation, ``(x.clamp(0, 1) * 255).to(uint8)`` as
the ADM and RAE samplers (``rounding='round'``: the nearest level).

Output::

    DIR/sampling.json           the settings; a rerun must match them
    DIR/samples/{i:06d}.png     one file per sample (written atomically;
                                existing ones are skipped when resuming)
    DIR/samples.npz             ADM layout: ``arr_0`` uint8 [N, H, W, 3] in
                                sample order, ``arr_1`` int64 [N] labels
"""
import json
import os
import os.path as osp
import time
from typing import Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.dist import barrier, get_dist_info
from PIL import Image
from torch import nn
from tqdm import tqdm

from decq_plugin.datasets.class_labels import ClassLabelDataset
from decq_plugin.utils.images import to_uint8 as quantize
from decq_plugin.utils.npz import save_npz_streamed
from .precision import (default_inference_precision, inference_precision,
                        prepare_inference)

SETTINGS_FILE = 'sampling.json'


def describe_guidance(guidance: Optional[nn.Module]) -> str:
    """``'none'`` or ``'ClassifierFreeGuidance(scale=..., ...)'``."""
    if guidance is None:
        return 'none'
    return f'{type(guidance).__name__}({guidance.extra_repr()})'


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
def sample_rank(model: nn.Module, labels: ClassLabelDataset,
                sample_dir: str, *, rank: int = 0, world_size: int = 1,
                batch_size: int = 64, device: Union[str, torch.device] = 'cpu',
                progress: bool = True, rounding: str = 'truncate') -> int:
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


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device('cpu')


def resolve_classes(model: nn.Module, classes: Optional[Sequence[int]],
                    num_classes: Optional[int] = None) -> List[int]:
    """``classes``, or ``0 .. num_classes - 1`` (default the model's);
    each must be one of the model's classes."""
    if classes is not None:
        classes = [int(c) for c in classes]
    else:
        classes = list(range(num_classes or model.num_classes))
    bad = [c for c in classes if not 0 <= c < model.num_classes]
    if bad:
        raise ValueError(f'classes {bad[:5]} are outside the model\'s '
                         f'0..{model.num_classes - 1}')
    return classes


def sample_to_npz(model: nn.Module, out_dir: str, *,
                  classes: Optional[Sequence[int]] = None,
                  num_classes: Optional[int] = None,
                  num_per_class: int = 50, batch_size: int = 64,
                  seed: int = 0, shuffle_classes: bool = True,
                  rounding: str = 'truncate', npz: Optional[str] = None,
                  write_npz: bool = True, keep_png: bool = True,
                  precision: Optional[str] = None,
                  compile: Union[bool, dict] = False,
                  device: Union[str, torch.device, None] = None,
                  settings: Optional[dict] = None,
                  progress: bool = True) -> dict:
    """Class-balanced samples of ``model`` (a stage-2 model with
    ``sample``, ``make_noise``, ``num_classes``) into ``out_dir``;
    rerunning continues an interrupted run.

    Args:
        model: the model, already on ``device`` and in eval mode.
        out_dir: output folder (``sampling.json``, ``samples/``, the npz).
        classes: classes to sample (default ``0 .. num_classes - 1``).
        num_classes: used without ``classes`` (default the model's).
        num_per_class: samples per class.
        batch_size: samples per forward pass (does not change the images).
        seed: noise seed of sample 0 (sample ``i``: ``seed + i``) and the
            seed of the class order.
        shuffle_classes: RAE's seeded random class order (else sorted).
        rounding: 8-bit conversion, ``'truncate'`` (ADM / RAE) or
            ``'round'``.
        npz: path of the ADM ``.npz`` (default ``out_dir/samples.npz``).
        write_npz: pack the PNGs into the ``.npz`` at the end.
        keep_png: keep the PNGs after packing (``False`` deletes them).
        precision: ``'fp32'``, ``'tf32'`` or ``'bf16'`` (default bf16 on GPUs
            with native bf16, else fp32).
        compile: compile the model's heavy regions first (a second call on
            the same model would compile them again: pass ``False`` then).
        device: where the noise is made (default the model's device).
        settings: more entries for ``sampling.json`` (e.g. the config and
            checkpoint paths); a rerun must give the same.
        progress: show a progress bar on rank 0.

    Returns:
        ``num_samples``, ``made_by_rank0`` (made now), ``seconds``,
        ``precision``, ``classes`` and, on rank 0 with ``write_npz``,
        ``npz`` and ``shape`` (of ``arr_0``: ``(N, H, W, 3)``).
    """
    if num_per_class < 1 or batch_size < 1:
        raise ValueError('num_per_class and batch_size must be >= 1, got '
                         f'{num_per_class} and {batch_size}')
    if not write_npz and not keep_png:
        raise ValueError('keep_png=False needs the .npz (write_npz=True)')
    rank, world_size = get_dist_info()
    device = _model_device(model) if device is None else device
    precision = precision or default_inference_precision(device)
    prepare_inference(model, compile)
    classes = resolve_classes(model, classes, num_classes)
    labels = ClassLabelDataset(classes=classes, num_per_class=num_per_class,
                               seed=seed, shuffle=shuffle_classes)
    run_settings = dict(settings or {})
    run_settings.update(
        seed=seed, num_per_class=num_per_class, classes=classes,
        class_order='random' if shuffle_classes else 'sorted',
        rounding=rounding, image_size=model.image_size,
        sampler=repr(model.sampler),
        guidance=describe_guidance(model.guidance), precision=precision)
    check_settings(out_dir, run_settings, write=rank == 0)
    barrier()

    sample_dir = osp.join(out_dir, 'samples')
    tic = time.time()
    with inference_precision(precision, device):
        made = sample_rank(model, labels, sample_dir, rank=rank,
                           world_size=world_size, batch_size=batch_size,
                           device=device, progress=progress and rank == 0,
                           rounding=rounding)
    seconds = time.time() - tic
    barrier()
    result = dict(num_samples=len(labels), made_by_rank0=made,
                  seconds=seconds, precision=precision, classes=classes)
    if rank != 0 or not write_npz:
        return result
    npz = npz or osp.join(out_dir, 'samples.npz')
    result['shape'] = pack_npz(sample_dir, labels.labels, npz)
    result['npz'] = npz
    if not keep_png:
        for i in range(len(labels)):
            os.remove(png_path(sample_dir, i))
    return result
