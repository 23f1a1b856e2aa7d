"""The files of an exported folder, written and read back with care.

    config.json         what to build (see :mod:`decq_plugin.apis.pretrained`)
    model.safetensors   the weights
    SHA256SUMS          SHA-256 of both, in ``sha256sum`` format (written
                        last, so an interrupted export has none)

Files are written under a temporary name and renamed, with the permissions
the process umask gives (as ``open`` does; ``safetensors`` alone would leave
0600). The loader checks every checksum listed before it reads a file, and a
damaged file gives a :class:`PretrainedFormatError` naming it, never a raw
``JSONDecodeError`` or ``SafetensorError``. A folder without ``SHA256SUMS``
(exported before checksums existed, or copied incompletely) is refused unless
the caller accepts it unverified (then a warning says so).
"""
import hashlib
import json
import os
import os.path as osp
import warnings
from typing import Dict, Sequence

import torch

CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
CHECKSUM_FILE = 'SHA256SUMS'
EXPORT_HINT = 'export it again with tools/export.py'


class PretrainedFormatError(ValueError):
    """A folder is not an exported model, or its files do not agree."""


def umask_mode(base: int = 0o666) -> int:
    """``base`` with the process umask applied (the mode ``open`` gives a
    new file)."""
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return base & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it back
    os.umask(mask)
    return base & ~mask


def _replace(tmp: str, path: str) -> None:
    os.chmod(tmp, umask_mode())
    os.replace(tmp, path)


def write_weights(state: Dict[str, torch.Tensor], path: str) -> None:
    """``state`` as a safetensors file at ``path`` (atomic, umask mode)."""
    from safetensors.torch import save_file
    tmp = f'{path}.tmp{os.getpid()}'
    save_file(state, tmp, metadata=dict(format='pt'))
    _replace(tmp, path)


def write_json(obj: dict, path: str) -> None:
    """``obj`` as indented JSON at ``path`` (atomic, umask mode)."""
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(obj, f, indent=1)
    _replace(tmp, path)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(folder: str, names: Sequence[str]) -> str:
    """``SHA256SUMS`` for ``names`` in ``folder`` (check by hand with
    ``sha256sum -c SHA256SUMS``); returns its path."""
    path = osp.join(folder, CHECKSUM_FILE)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w', encoding='ascii') as f:
        for name in names:
            f.write(f'{sha256_file(osp.join(folder, name))}  {name}\n')
    _replace(tmp, path)
    return path


def read_checksums(folder: str) -> Dict[str, str]:
    """``{file name: sha256}`` from ``folder``'s ``SHA256SUMS``."""
    path = osp.join(folder, CHECKSUM_FILE)
    sums = {}
    try:
        with open(path, encoding='ascii') as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise PretrainedFormatError(
            f'{path!r} cannot be read ({err}); {EXPORT_HINT}') from err
    for number, line in enumerate(lines, 1):
        digest, _, name = line.partition(' ')
        name = name.lstrip(' *')
        if (len(digest) != 64 or not name or name != osp.basename(name)
                or name in ('.', '..')
                or any(c not in '0123456789abcdef' for c in digest)):
            raise PretrainedFormatError(
                f'{path!r} line {number}: {line[:100]!r} is not '
                f'"<sha256>  <file name>"; {EXPORT_HINT}')
        sums[name] = digest
    return sums


def verify_folder(folder: str, required: Sequence[str],
                  allow_unverified: bool = False) -> None:
    """Check that ``required`` files exist and match ``SHA256SUMS``.

    Raises:
        PretrainedFormatError: a file is missing, a checksum differs (the
            file is named), or there is no ``SHA256SUMS`` and
            ``allow_unverified`` is False.
    """
    missing = [n for n in required if not osp.isfile(osp.join(folder, n))]
    if missing:
        raise PretrainedFormatError(
            f'{folder!r} is not an exported model: {missing} missing (it '
            f'needs {list(required)}; write them with tools/export.py)')
    if not osp.isfile(osp.join(folder, CHECKSUM_FILE)):
        message = (f'{folder!r} has no {CHECKSUM_FILE}, so its files cannot '
                   'be checked for damage (exported before checksums, or '
                   f'copied or written incompletely)')
        if not allow_unverified:
            raise PretrainedFormatError(
                f'{message}. Export it again with tools/export.py; or, if '
                'you trust the files, load it with allow_unverified=True, '
                f'or write the file with `sha256sum {" ".join(required)} > '
                f'{CHECKSUM_FILE}` in that folder.')
        warnings.warn(f'{message}; loading it unverified '
                      '(allow_unverified=True)')
        return
    sums = read_checksums(folder)
    unlisted = [n for n in required if n not in sums]
    if unlisted:
        raise PretrainedFormatError(
            f'{osp.join(folder, CHECKSUM_FILE)!r} lists no checksum for '
            f'{unlisted}; {EXPORT_HINT}')
    for name, want in sums.items():
        path = osp.join(folder, name)
        if not osp.isfile(path):
            raise PretrainedFormatError(
                f'{path!r} is listed in {CHECKSUM_FILE} but missing; '
                f'{EXPORT_HINT}')
        got = sha256_file(path)
        if got != want:
            raise PretrainedFormatError(
                f'{path!r} is damaged: its SHA-256 is {got}, '
                f'{CHECKSUM_FILE} says {want} ({os.path.getsize(path)} '
                f'bytes now); copy or download it again, or {EXPORT_HINT}')


def read_config_json(path: str) -> dict:
    """The JSON object in ``path``; a clear error when it is not one."""
    try:
        with open(path, encoding='utf-8') as f:
            obj = json.load(f)
    except UnicodeDecodeError as err:
        raise PretrainedFormatError(
            f'{path!r} is not UTF-8 text ({err}); {EXPORT_HINT}') from None
    except json.JSONDecodeError as err:
        raise PretrainedFormatError(
            f'{path!r} is not valid JSON (line {err.lineno}, column '
            f'{err.colno}: {err.msg}); the file is truncated or damaged: '
            f'{EXPORT_HINT}') from None
    except RecursionError:
        raise PretrainedFormatError(
            f'{path!r} nests too deeply to be an exported config; '
            f'{EXPORT_HINT}') from None
    if not isinstance(obj, dict):
        raise PretrainedFormatError(
            f'{path!r} holds a JSON {type(obj).__name__}, not an object; '
            f'{EXPORT_HINT}')
    return obj


def read_weights(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a clear error when it is
    truncated or not one."""
    from safetensors.torch import load_file
    try:
        return load_file(path, device='cpu')
    except Exception as err:  # SafetensorError, header errors, OSError
        raise PretrainedFormatError(
            f'{path!r} is not a readable safetensors file '
            f'({type(err).__name__}: {err}); the file is truncated or '
            f'damaged: {EXPORT_HINT}') from None
