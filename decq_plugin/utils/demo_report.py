"""The last step of ``tools/demo.sh``: a sample grid with one class per row,
and the metrics labelled as coming from a random feature network.

The demo scores its samples with ``RandomConvFeatureExtractor`` (a tiny
randomly initialised network; no Inception weights are downloaded), so its
FID / IS / precision / recall exercise the code path and mean nothing
beside published numbers. Both stdout and ``generation_metrics.txt`` say so.

    python -m decq_plugin.utils.demo_report WORK_DIR

reads ``WORK_DIR/samples/samples.npz`` (``arr_0`` uint8 ``[N,H,W,3]``,
``arr_1`` int64 labels ``[N]``) and writes ``WORK_DIR/sample_grid.png``.
"""
import argparse
import os.path as osp
from typing import List, Optional

import numpy as np
import torch

from .images import save_image_grid

RANDOM_FEATURES_NOTE = (
    'NOTE: these FID / IS / precision / recall values come from a tiny '
    'random feature network (RandomConvFeatureExtractor), not from '
    'Inception-v3: they check that the pipeline runs and are not comparable '
    'with published numbers.')


def save_class_grid(npz_path: str, out_path: str) -> List[int]:
    """Write the samples of ``npz_path`` as a grid with one class per row
    (classes in ascending order, samples in file order); returns the class
    of each row."""
    with np.load(npz_path) as data:
        images, labels = data['arr_0'], data['arr_1']
    if len(images) != len(labels) or not len(labels):
        raise ValueError(f'{npz_path}: {len(images)} images and '
                         f'{len(labels)} labels (arr_1); need as many, > 0')
    classes, counts = np.unique(labels, return_counts=True)
    width = int(counts.max())
    blank = np.full_like(images[0], 255)
    rows = []
    for cls in classes:
        row = list(images[labels == cls])
        rows.extend(row + [blank] * (width - len(row)))
    grid = torch.from_numpy(np.stack(rows)).permute(0, 3, 1, 2).float() / 255
    save_image_grid(grid, out_path, nrow=width)
    return [int(c) for c in classes]


def label_metrics_file(path: str) -> None:
    """Put :data:`RANDOM_FEATURES_NOTE` at the top of the metrics file."""
    with open(path) as f:
        text = f.read()
    if RANDOM_FEATURES_NOTE not in text:
        with open(path, 'w') as f:
            f.write(RANDOM_FEATURES_NOTE + '\n' + text)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description='Write the demo sample grid (one class per row) and '
        'label its metrics as random-feature numbers.')
    parser.add_argument('work_dir', help='the demo work dir')
    args = parser.parse_args(argv)
    grid = osp.join(args.work_dir, 'sample_grid.png')
    classes = save_class_grid(
        osp.join(args.work_dir, 'samples', 'samples.npz'), grid)
    print(f'{grid}: one class per row, rows top to bottom = classes '
          f'{classes}')
    metrics = osp.join(args.work_dir, 'generation_metrics.txt')
    if osp.exists(metrics):
        label_metrics_file(metrics)
    print(RANDOM_FEATURES_NOTE)


if __name__ == '__main__':
    main()
