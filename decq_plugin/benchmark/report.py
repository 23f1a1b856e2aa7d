"""Benchmark reports: a Markdown table, CSV, JSON and the reconstruction vs
generation trade-off plot (rPSNR against gFID, like the paper's Figure 1).

A *row* is a flat dict per tokenizer (see :func:`build_rows`): the numbers
of its stored result, the throughput relative to the first tokenizer, and
its gFID / paper numbers when known.
"""
import csv
import json
import math
import os
import os.path as osp
import textwrap
from typing import Dict, List, Optional, Sequence

from .cache import write_json_atomic

CSV_FIELDS = ('name', 'psnr', 'ssim', 'rfid', 'lpips', 'encode_images_per_s',
              'encode_vs_first', 'decode_images_per_s', 'decode_vs_first',
              'params', 'encoder_params', 'condenser_params',
              'decoder_params', 'encode_flops', 'decode_flops', 'gfid',
              'num_images', 'random_weights', 'config', 'cfg_options',
              'checkpoint', 'paper', 'psnr_std', 'ssim_std', 'rfid_std',
              'lpips_std', 'seeds')
# 6.4 x 4.8 inches at 150 dpi: a 960 x 720 PNG.
PLOT_SIZE_IN = (6.4, 4.8)
PLOT_DPI = 150


def build_rows(results: Sequence[dict],
               gfid: Optional[Dict[str, float]] = None,
               paper: Optional[Dict[str, dict]] = None) -> List[dict]:
    """One flat row per result; throughput ratios are images/s divided by
    the first result's (so > 1 is faster than the first tokenizer)."""
    if not results:
        raise ValueError('no results to report')
    gfid, paper = gfid or {}, paper or {}
    first = results[0]['throughput']
    rows = []
    for result in results:
        metrics, costs = result['metrics'], result['costs']
        std = result.get('metrics_std') or {}
        tp = result['throughput']
        rows.append(dict(
            name=result['name'],
            psnr=metrics.get('psnr'), ssim=metrics.get('ssim'),
            rfid=metrics.get('rfid'), lpips=metrics.get('lpips'),
            psnr_std=std.get('psnr'), ssim_std=std.get('ssim'),
            rfid_std=std.get('rfid'), lpips_std=std.get('lpips'),
            seeds=len(result.get('metrics_per_seed') or []) or None,
            encode_images_per_s=tp['encode_images_per_s'],
            encode_vs_first=(tp['encode_images_per_s'] /
                             first['encode_images_per_s']),
            decode_images_per_s=tp['decode_images_per_s'],
            decode_vs_first=(tp['decode_images_per_s'] /
                             first['decode_images_per_s']),
            params=costs['params'], encoder_params=costs['encoder_params'],
            condenser_params=costs['condenser_params'],
            decoder_params=costs['decoder_params'],
            encode_flops=costs['encode_flops'],
            decode_flops=costs['decode_flops'],
            gfid=gfid.get(result['name']),
            num_images=metrics.get('num_images'),
            random_weights=bool(result.get('random_weights')),
            config=result.get('config'),
            cfg_options=result.get('cfg_options') or {},
            checkpoint=result.get('checkpoint'),
            paper=paper.get(result['name']) or {}))
    return rows


def _num(value: Optional[float], digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '-'
    return f'{value:.{digits}f}'


def _spread(row: dict, key: str, digits: int) -> str:
    """``'mean'``, or ``'mean ± std'`` for trained multi-seed rows."""
    text = _num(row.get(key), digits)
    if row.get(f'{key}_std') is not None and (row.get('seeds') or 0) > 1:
        text += f" ± {_num(row[f'{key}_std'], digits)}"
    return text


def _gflops(flops: float) -> str:
    value = flops / 1e9
    return f'{value:.2f}' if value >= 1 else f'{value:.3g}'


def _paper(numbers: dict) -> str:
    return ', '.join(f'{k} {v}' for k, v in numbers.items()) or '-'


def markdown_table(rows: Sequence[dict]) -> str:
    """The comparison table; gFID and paper columns only when some row has
    them. Throughput cells read 'images/s (x ratio to the first row)'."""
    with_gfid = any(r.get('gfid') is not None for r in rows)
    with_paper = any(r.get('paper') for r in rows)
    head = ['Tokenizer', 'PSNR ↑', 'SSIM ↑', 'rFID ↓', 'LPIPS ↓',
            'encode img/s', 'decode img/s', 'params (M)',
            'GFLOPs enc / dec']
    align = ['---'] + ['---:'] * (len(head) - 1)
    if with_gfid:
        head.append('gFID ↓')
        align.append('---:')
    if with_paper:
        head.append('paper')
        align.append('---')
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '|'.join(align) + '|']
    for r in rows:
        cells = [r['name'], _spread(r, 'psnr', 2), _spread(r, 'ssim', 4),
                 _spread(r, 'rfid', 2), _spread(r, 'lpips', 4),
                 f"{r['encode_images_per_s']:.1f} "
                 f"(x{r['encode_vs_first']:.2f})",
                 f"{r['decode_images_per_s']:.1f} "
                 f"(x{r['decode_vs_first']:.2f})",
                 f"{r['params'] / 1e6:.2f}",
                 f"{_gflops(r['encode_flops'])} / "
                 f"{_gflops(r['decode_flops'])}"]
        if with_gfid:
            cells.append(_num(r.get('gfid'), 2))
        if with_paper:
            cells.append(_paper(r.get('paper') or {}))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def markdown_report(title: str, rows: Sequence[dict],
                    notes: Sequence[str]) -> str:
    """``# title``, the table, then the notes as a bullet list."""
    text = f'# {title}\n\n{markdown_table(rows)}\n'
    if notes:
        text += '\n' + ''.join(f'- {n}\n' for n in notes)
    return text


def write_markdown(path: str, title: str, rows: Sequence[dict],
                   notes: Sequence[str]) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        f.write(markdown_report(title, rows, notes))


def _csv_value(value) -> str:
    if value is None:
        return ''
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return repr(value) if isinstance(value, float) else str(value)


def write_csv(path: str, rows: Sequence[dict]) -> None:
    """Raw numbers (full precision; params and FLOPs as counts)."""
    with open(path, 'w', encoding='utf-8', newline='') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(CSV_FIELDS)
        for row in rows:
            writer.writerow([_csv_value(row.get(k)) for k in CSV_FIELDS])


def write_json(path: str, summary: dict) -> None:
    write_json_atomic(path, summary)


def tradeoff_plot(path: str, rows: Sequence[dict], title: str = '') -> bool:
    """rPSNR (x) vs gFID (y) of the rows that have both, each point
    labelled with its tokenizer; a 960 x 720 PNG. Returns False (and writes
    nothing) when no row has both numbers."""
    points = [(r['name'], r['psnr'], r['gfid']) for r in rows
              if r.get('psnr') is not None and r.get('gfid') is not None]
    if not points:
        return False
    from matplotlib.figure import Figure  # no pyplot: no global state

    fig = Figure(figsize=PLOT_SIZE_IN, dpi=PLOT_DPI)
    ax = fig.add_subplot()
    colors = [f'C{i % 10}' for i in range(len(points))]
    xs = [p[1] for p in points]
    ys = [p[2] for p in points]
    ax.scatter(xs, ys, s=70, c=colors, zorder=3, edgecolors='black',
               linewidths=0.6)
    for (name, x, y), color in zip(points, colors):
        ax.annotate(name, (x, y), xytext=(7, 5), textcoords='offset points',
                    fontsize=9, color=color)
    ax.set_xlabel('reconstruction: rPSNR (dB), higher is better')
    ax.set_ylabel('generation: gFID, lower is better')
    ax.grid(alpha=0.3, zorder=0)
    ax.margins(x=0.2, y=0.2)
    if title:
        ax.set_title(textwrap.fill(title, 70), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format='png')
    return True


def _describe(cfg: Optional[dict]) -> str:
    """``Type(k=v, ...)`` of a registry config dict."""
    if not cfg:
        return 'None'
    args = ', '.join(f'{k}={_describe(v) if isinstance(v, dict) else v!r}'
                     for k, v in cfg.items() if k != 'type')
    return f"{cfg.get('type', 'dict')}({args})"


def report_notes(settings: dict, results: Sequence[dict]) -> List[str]:
    """What the numbers mean and where they are not comparable.

    Args:
        settings: ``dataset``, ``num_images``, ``metrics``, ``rfid``,
            ``lpips`` and ``autocast`` (see ``BenchmarkSuite.data_settings``)
            plus ``batch_size``.
        results: the per-tokenizer results, in table order.
    """
    first = results[0]
    n = first['metrics'].get('num_images')
    metrics = settings['metrics']
    notes = [f"Data: {_describe(settings['dataset'])}, {n} images (batch "
             f"{settings['batch_size']}); reconstructions are "
             'decode(encode(x)).']
    if 'psnr' in metrics or 'ssim' in metrics:
        notes.append('PSNR (dB) and SSIM per image on 8-bit quantised '
                     'images, averaged over images.')
    if 'rfid' in metrics:
        extractor = settings['rfid'].get('feature_extractor')
        kind = (extractor or {}).get('type', 'InceptionV3FeatureExtractor')
        text = (f'rFID: Frechet distance between the features of the {n} '
                f'reconstructions and of their {n} originals ({kind}).')
        if kind != 'InceptionV3FeatureExtractor':
            text += (' NOT comparable with published rFID (which uses the '
                     'FID Inception-v3).')
        elif n is not None and n < 50000:
            text += ' The paper uses the 50k ImageNet val images.'
        notes.append(text)
    if 'lpips' in metrics:
        lp = settings['lpips']
        text = f"LPIPS ({lp['net']} trunk), mean over images."
        if not lp.get('pretrained_trunk', True):
            text += (' The trunk is RANDOM (pretrained_trunk=False, offline '
                     'mode): NOT comparable with published LPIPS.')
        notes.append(text)
    tp = first['throughput']
    notes.append(
        f"Throughput: encode and decode timed separately on the same batch "
        f"of {tp['batch_size']} images on {tp['device_name']} "
        f"({tp['device']}, autocast {tp['autocast']}), median of "
        f"{tp['repeats']} runs after {tp['warmup']} warm-up runs; (xR) is "
        f"images/s relative to {first['name']}.")
    runs = [r['throughput'].get('run_id') for r in results]
    if len(set(runs)) > 1:
        latest = max(r for r in runs if r is not None)
        older = [r['name'] for r in results
                 if r['throughput'].get('run_id') != latest]
        notes.append(f'Throughput of {older} comes from an earlier run than '
                     'the others (--reuse-timing); rerun without it to time '
                     'all in one run.')
    notes.append('Params: VFM + condensers + decoder (a distillation '
                 'teacher is not counted). GFLOPs per image, one '
                 'multiply-add = 2 FLOPs, attention counted '
                 '(torch.utils.flop_counter); enc = VFM + condensers.')
    trained = [r for r in results if r.get('train_settings')]
    if trained:
        t = trained[0]['train_settings']
        notes.append(
            f"TRAINED here (--train), each from its seed's initial weights "
            f"and the same frozen VFM: {t['iters']} AdamW steps (lr "
            f"{t['lr']:g}, batch {t['batch_size']}) of L1 reconstruction "
            f"loss (+ the tokenizer's own auxiliary losses) on "
            f"{_describe(t['dataset'])}; mean ± sample std over seeds "
            f"{t['seeds']}. A miniature of the paper's comparison, not its "
            'numbers.')
    random = [r['name'] for r in results if r.get('random_weights')]
    if random:
        notes.append(f'RANDOM weights (no checkpoint) for {random}: their '
                     'numbers exercise the pipeline, they say nothing about '
                     'the method.')
    seen: Dict[str, str] = {}
    for r in results:
        if r.get('key') in seen:
            notes.append(f"{r['name']!r} reconstructs with the same tokenizer "
                         f"as {seen[r['key']]!r} (same config, checkpoint "
                         'and data): it differs only in generation.')
        else:
            seen[r.get('key')] = r['name']
    return notes


def write_reports(out_dir: str, title: str, settings: dict,
                  results: Sequence[dict],
                  gfid: Optional[Dict[str, float]] = None,
                  paper: Optional[Dict[str, dict]] = None,
                  extra: Optional[dict] = None) -> Dict[str, str]:
    """``benchmark.md``, ``benchmark.csv``, ``benchmark.json`` and, when
    some tokenizer has a gFID, ``tradeoff.png`` in ``out_dir``.

    Returns:
        ``{'markdown', 'csv', 'json'[, 'plot']}`` -> path.
    """
    os.makedirs(out_dir, exist_ok=True)
    rows = build_rows(results, gfid, paper)
    notes = report_notes(settings, results)
    paths = dict(markdown=osp.join(out_dir, 'benchmark.md'),
                 csv=osp.join(out_dir, 'benchmark.csv'),
                 json=osp.join(out_dir, 'benchmark.json'))
    write_markdown(paths['markdown'], title, rows, notes)
    write_csv(paths['csv'], rows)
    write_json(paths['json'], dict(title=title, settings=settings,
                                   notes=notes, rows=rows,
                                   results=list(results), **(extra or {})))
    plot = osp.join(out_dir, 'tradeoff.png')
    if tradeoff_plot(plot, rows, title):
        paths['plot'] = plot
    return paths


def read_generation_results(path: str) -> Dict[str, float]:
    """gFID per tokenizer name from a JSON object whose values are numbers
    or objects with a ``gfid`` (or ``fid``) number, e.g.
    ``{"RAE": 2.16, "DecQ": {"gfid": 1.80, "epochs": 80}}``."""
    with open(path, encoding='utf-8') as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f'--generation {path}: not valid JSON ({err})'
                             ) from err
    if not isinstance(raw, dict):
        raise ValueError(f'--generation {path}: expected an object mapping '
                         'tokenizer names to gFID')
    out = {}
    for name, value in raw.items():
        if isinstance(value, dict):
            value = value.get('gfid', value.get('fid'))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'--generation {path}: {name!r} needs a number '
                             "or an object with 'gfid', got "
                             f'{raw[name]!r}')
        out[name] = float(value)
    return out
