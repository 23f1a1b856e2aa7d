"""Plot training curves from MMEngine's ``vis_data/scalars.json``: losses,
learning rate and images per second against the iteration, and validation
metrics (``--keys PSNR SSIM``) at the iteration where validation ran.

    python tools/analysis/analyze_logs.py WORK_DIR_OR_SCALARS_JSON ...
        [--keys loss loss_l1 lr img/s] [--batch-size 64] [--out curves.png]
        [--legend RUN_A RUN_B]

A work dir is searched for its newest ``*/vis_data/scalars.json``. Images
per second = batch size / iteration ``time``; the batch size comes from
``--batch-size``, else from the ``config.py`` saved beside the scalars
(``train_dataloader.batch_size``, per process). A key no row holds stands
for every ``*.<key>`` (``lr``: ``tokenizer.lr`` and ``discriminator.lr``
of stage 1); a key found in no row of a log is reported with the keys the
log has. Prints a summary per run.
"""
import argparse
import glob
import json
import math
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))
from decq_plugin.utils.cli import doc_summary  # noqa: E402

DEFAULT_KEYS = ('loss', 'lr', 'img/s')


def find_scalars(path: str) -> str:
    """``path`` itself, or the newest ``*/vis_data/scalars.json`` below a
    work dir."""
    if osp.isfile(path):
        return path
    found = sorted(glob.glob(osp.join(path, '*', 'vis_data',
                                      'scalars.json')) +
                   glob.glob(osp.join(path, 'vis_data', 'scalars.json')))
    if not found:
        raise FileNotFoundError(f'no vis_data/scalars.json under {path!r}')
    return found[-1]


def read_scalars(path: str) -> Tuple[List[dict], List[dict]]:
    """The training rows (those with an ``iter``) and the validation rows
    of a scalars.json (one JSON object per line).

    A validation row has no ``iter``; it gets one: that of the last
    training row before it (the iteration at which validation ran), so
    both kinds share the x axis.
    """
    train, val = [], []
    last_iter = 0
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            if 'iter' in row:
                last_iter = row['iter']
                train.append(row)
            else:
                val.append(dict(row, iter=last_iter))
    return train, val


def expand_keys(rows: Sequence[dict], keys: Sequence[str]) -> List[str]:
    """``keys`` with each one that no row holds replaced by the row keys
    ending in ``.<key>`` (``lr`` -> ``tokenizer.lr``,
    ``discriminator.lr`` of a run with several optimizers)."""
    present = {k for row in rows for k in row}
    out = []
    for key in keys:
        if key in present or key == 'img/s':
            out.append(key)
        else:
            out.extend(sorted(k for k in present if k.endswith('.' + key)))
    return list(dict.fromkeys(out))


def config_batch_size(scalars: str) -> Optional[int]:
    """``train_dataloader.batch_size`` of the config saved beside
    ``scalars`` (None when absent)."""
    path = osp.join(osp.dirname(scalars), 'config.py')
    if not osp.isfile(path):
        return None
    from mmengine.config import Config
    try:
        return int(Config.fromfile(path).train_dataloader.batch_size)
    except Exception:  # an unreadable or partial config
        return None


def curves(rows: Sequence[dict], keys: Sequence[str],
           batch_size: Optional[int]) -> Dict[str, tuple]:
    """``{key: (iters, values)}`` for every key found; ``'img/s'`` is
    ``batch_size / time``."""
    out = {}
    for key in keys:
        xs, ys = [], []
        for row in rows:
            if key == 'img/s':
                if batch_size and row.get('time'):
                    xs.append(row['iter'])
                    ys.append(batch_size / row['time'])
            elif isinstance(row.get(key), (int, float)):
                xs.append(row['iter'])
                ys.append(float(row[key]))
        if xs:
            out[key] = (xs, ys)
    return out


def summary(name: str, series: Dict[str, tuple]) -> str:
    parts = []
    for key, (xs, ys) in series.items():
        finite = [y for y in ys if math.isfinite(y)]
        if finite:
            parts.append(f'{key}: first {ys[0]:.4g}, last {ys[-1]:.4g}, '
                         f'min {min(finite):.4g}')
    return f"{name} ({len(next(iter(series.values()))[0]) if series else 0} "\
        f"points) " + '; '.join(parts)


def plot(runs: Dict[str, Dict[str, tuple]], keys: Sequence[str],
         out: str) -> None:
    """One panel per key, one line per run, written to ``out`` (PNG)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    keys = [k for k in keys if any(k in s for s in runs.values())]
    fig, axes = plt.subplots(len(keys), 1, figsize=(6.4, 2.4 * len(keys)),
                             squeeze=False, sharex=True)
    for ax, key in zip(axes[:, 0], keys):
        for name, series in runs.items():
            if key in series:
                ax.plot(*series[key], label=name, linewidth=1)
        ax.set_ylabel(key)
        if key.startswith('loss') and all(
                y > 0 for s in runs.values() if key in s for y in s[key][1]):
            ax.set_yscale('log')
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize='small')
    axes[-1, 0].set_xlabel('iteration')
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=doc_summary(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('logs', nargs='+',
                        help='work dirs or scalars.json files')
    parser.add_argument('--keys', nargs='+', default=list(DEFAULT_KEYS))
    parser.add_argument('--batch-size', type=int,
                        help='images per iteration and process, for img/s')
    parser.add_argument('--legend', nargs='+', help='one name per log')
    parser.add_argument('--out', default='curves.png')
    args = parser.parse_args(argv)
    if args.legend and len(args.legend) != len(args.logs):
        parser.error('--legend needs one name per log')
    return args


def missing_keys(keys: Sequence[str], rows: Sequence[dict],
                 series: Dict[str, tuple]) -> List[str]:
    """The requested ``keys`` that gave no curve (neither the key nor a
    ``*.key`` is in ``series``)."""
    return [k for k in keys
            if not any(s == k or s.endswith('.' + k) for s in series)]


def main(argv=None) -> Dict[str, Dict[str, tuple]]:
    args = parse_args(argv)
    runs = {}
    try:
        for i, log in enumerate(args.logs):
            path = find_scalars(log)
            name = args.legend[i] if args.legend else log
            batch = args.batch_size or config_batch_size(path)
            train, val = read_scalars(path)
            series = curves(train, expand_keys(train, args.keys), batch)
            val_keys = [k for k in expand_keys(val, args.keys)
                        if k not in series and k != 'img/s']
            series.update(curves(val, val_keys, None))
            runs[name] = series
            for key in missing_keys(args.keys, train + val, series):
                keys_in_log = sorted({k for row in train + val for k in row}
                                     - {'iter', 'step', 'epoch'})
                print(f"analyze_logs.py: key '{key}' is not in {path} "
                      f"(training and validation rows); its keys: "
                      f"{', '.join(keys_in_log) or 'none'}", file=sys.stderr)
            print(summary(name, series))
        keys = list(dict.fromkeys(
            k for series in runs.values() for k in series))
        if not keys:
            raise ValueError(f"none of the keys {' '.join(args.keys)} was "
                             'found in the logs')
        plot(runs, keys, args.out)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'analyze_logs.py: error: {err}')
    print(f'wrote {args.out}')
    return runs


if __name__ == '__main__':
    main()
