"""Write ADM-suite ``.npz`` sample files without holding them in memory.

The ADM evaluation suite (and ``np.load``) reads an ``.npz``: an
uncompressed zip of ``.npy`` files. Its sampling script saves class-
conditional samples as ``np.savez(path, images, labels)``, i.e.

    arr_0   uint8 [N, H, W, 3]   the images (what the evaluator reads)
    arr_1   int64 [N]            their class labels (ignored by the evaluator)

50,000 images of 256 px are ~9.8 GB, so :func:`save_npz_streamed` writes
the big array chunk by chunk into the zip member (zip64), keeping only one
chunk in memory.
"""
import os
import zipfile
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np


def _npy_header(fp, shape: Sequence[int], dtype: np.dtype) -> None:
    header = dict(descr=np.lib.format.dtype_to_descr(np.dtype(dtype)),
                  fortran_order=False, shape=tuple(int(s) for s in shape))
    np.lib.format.write_array_header_1_0(fp, header)


def save_npz_streamed(path: str,
                      shape: Sequence[int],
                      chunks: Iterable[np.ndarray],
                      dtype: np.dtype = np.uint8,
                      name: str = 'arr_0',
                      extra: Optional[Mapping[str, np.ndarray]] = None
                      ) -> None:
    """Write an ``.npz`` whose array ``name`` is the concatenation of
    ``chunks`` along axis 0.

    Args:
        path: output file; written to ``path + '.tmp'`` first and renamed,
            so an interrupted write leaves no truncated file behind.
        shape: shape of the whole array, e.g. ``(N, H, W, 3)``.
        chunks: arrays ``[n_i, *shape[1:]]`` of ``dtype`` with
            ``sum(n_i) == shape[0]``.
        dtype: dtype of the array.
        name: member name (without ``.npy``).
        extra: small arrays stored alongside (e.g. ``{'arr_1': labels}``).

    Raises:
        ValueError: a chunk has the wrong trailing shape or dtype, or the
            chunks do not add up to ``shape[0]`` rows.
    """
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    if not shape or min(shape) < 0:
        raise ValueError(f'shape must be a non-empty shape, got {shape}')
    extra = dict(extra or {})
    if name in extra:
        raise ValueError(f'extra must not hold the array name {name!r}')
    tmp = path + '.tmp'
    try:
        with zipfile.ZipFile(tmp, 'w', zipfile.ZIP_STORED,
                             allowZip64=True) as archive:
            with archive.open(name + '.npy', 'w', force_zip64=True) as fp:
                _npy_header(fp, shape, dtype)
                rows = 0
                for chunk in chunks:
                    chunk = np.asarray(chunk)
                    if chunk.shape[1:] != shape[1:] or chunk.dtype != dtype:
                        raise ValueError(
                            f'chunk {chunk.dtype} {chunk.shape} does not fit '
                            f'an array {dtype} {shape}')
                    rows += chunk.shape[0]
                    if rows > shape[0]:
                        raise ValueError(f'chunks hold more than {shape[0]} '
                                         'rows')
                    fp.write(np.ascontiguousarray(chunk).tobytes())
                if rows != shape[0]:
                    raise ValueError(f'chunks hold {rows} rows, shape says '
                                     f'{shape[0]}')
            for key, value in extra.items():
                with archive.open(key + '.npy', 'w', force_zip64=True) as fp:
                    np.lib.format.write_array(fp, np.asarray(value),
                                              allow_pickle=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
