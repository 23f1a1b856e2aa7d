"""Markdown tables of a GPU benchmark (``benchmark_gpu.json``) and of a
GPU profile (``profile_gpu.json``)."""
from typing import List


def benchmark_markdown(results: dict) -> str:
    env = results['env']
    lines = [f"# GPU benchmark: {env['gpu']}, torch {env['torch']}, "
             f"{env['date']}", '', f"Command: `{env['command']}`", '']
    if 'matmul' in results:
        lines += [f"bf16 matmul ceiling: {results['matmul']['tflops']} "
                  'TFLOP/s (MFU denominator)', '']
    lines += ['| what | batch | img/s | peak GiB | MFU | note |',
              '|---|---|---|---|---|---|']

    def row(what, r, note=''):
        if not isinstance(r, dict):
            return
        if 'img_s' not in r:
            lines.append(f"| {what} | | failed (rc {r.get('rc')}) | | | "
                         f'{note} |')
            return
        peak = r.get('peak_gib') or (round(r['memory_mib'] / 1024, 1)
                                     if r.get('memory_mib') else '')
        mfu = f"{r['mfu']:.0%}" if r.get('mfu') is not None else ''
        lines.append(f"| {what} | {r.get('batch', '')} | {r['img_s']} | "
                     f'{peak} | {mfu} | {note} |')

    for r in results.get('headline') or []:
        if isinstance(r, dict):
            row(f"DiT-DH-XL train step, {r['what']}", r,
                f"{r.get('gflop_per_img')} GFLOP/img; CFG forward "
                f"{r.get('cfg_forward_img_s_per_nfe')} img/s per NFE"
                if 'img_s' in r else r.get('error', ''))
    step = results.get('step')
    row('DiT-DH-XL DecQ train step, hand-written, compiled regions', step,
        f"{step.get('gflop_per_img')} GFLOP/img" if step else '')
    if step and 'cfg_forward_img_s_per_nfe' in step:
        lines.append(f"| DiT-DH-XL DecQ CFG forward (2 x batch), per NFE | "
                     f"{step['batch']} | {step['cfg_forward_img_s_per_nfe']}"
                     ' | | | |')
    row('tools/train.py stage 2 XL DecQ, --compile, bf16',
        results.get('train2'), 'img/s from its log')
    row('tools/train.py stage 1 DecQ, every loss on, --compile, bf16',
        results.get('train1'), 'img/s from its log')
    sample = results.get('sample')
    row('tools/sample.py XL DecQ CFG, 50 steps + decode, --compile', sample,
        f"{sample.get('precision')}" if sample else '')
    return '\n'.join(lines) + '\n'


def profile_markdown(results: dict) -> str:
    env = results['env']
    lines = [f"# GPU profile: {env['gpu']}, torch {env['torch']}, "
             f"{env['date']}", '', f"Command: `{env['command']}`", '']
    att = results.get('attention')
    if isinstance(att, list) and att:
        keys = [k for k in att[0] if k not in ('shape', 'b', 'h', 'n', 'd')]
        lines += ['## SDPA fwd+bwd ms (TFLOP/s)', '',
                  '| shape | B, H, N, d | ' + ' | '.join(keys) + ' |',
                  '|---|---|' + '---|' * len(keys)]
        for r in att:
            cells = []
            for k in keys:
                c = r[k]
                cells.append(f"{c['fwd_bwd_ms']} ({c['fwd_bwd_tflops']})"
                             if 'fwd_bwd_ms' in c else 'n/a')
            lines.append(f"| {r['shape']} | {r['b']}, {r['h']}, {r['n']}, "
                         f"{r['d']} | " + ' | '.join(cells) + ' |')
        lines.append('')
    dit = results.get('dit')
    if isinstance(dit, list):
        lines += ['## DiT-DH-XL hand-written step variants', '',
                  '| variant | batch | img/s | step ms | peak GiB | '
                  'CFG img/s |',
                  '|---|---|---|---|---|---|']
        for r in dit:
            if 'img_s' not in r:
                lines.append(f"| {r['variant']} | | {r.get('error')} | | | |")
                continue
            lines.append(f"| {r['variant']} | {r['batch']} | {r['img_s']} | "
                         f"{r['step_ms']} | {r['peak_gib']} | "
                         f"{r.get('cfg_forward_img_s_per_nfe', '')} |")
        lines.append('')
        for r in dit:
            for key in ('kernels', 'cfg_kernels'):
                if key in r:
                    lines += _kernel_lines(f"{r['variant']} {key}", r[key])
    s1 = results.get('stage1')
    if isinstance(s1, dict) and 'phases' in s1:
        lines += [f"## Stage-1 train_step, batch {s1['batch']}: "
                  f"{s1['img_s']} img/s ({s1['step_ms']} ms, "
                  f"{s1['peak_gib']} GiB)", '',
                  f"Phases (synced; total {s1['phases_total_ms']} ms):", '',
                  '| phase | ms / step | calls |', '|---|---|---|']
        for k, v in s1['phases'].items():
            lines.append(f"| {k} | {v['ms']} | {v['calls']} |")
        lines.append('')
        lines += _kernel_lines('stage-1 kernels', s1['kernels'])
        lines += ['| compiled in addition (cumulative) | img/s | peak GiB |',
                  '|---|---|---|']
        for r in s1.get('more_regions', []):
            lines.append(f"| {r['added']} | {r.get('img_s', r.get('error'))}"
                         f" | {r.get('peak_gib', '')} |")
        lines.append('')
    return '\n'.join(lines) + '\n'


def _kernel_lines(title: str, table: dict) -> List[str]:
    lines = [f"### {title}: {table['total_ms']} ms of {table['device']} "
             'time per step', '', '| class | ms | share |', '|---|---|---|']
    for k, v in table['classes'].items():
        lines.append(f"| {k} | {v['ms']} | {v['share']:.1%} |")
    lines += ['', '| kernel | ms | calls |', '|---|---|---|']
    for t in table['top'][:15]:
        lines.append(f"| `{t['name']}` | {t['ms']} | {t['calls']} |")
    return lines + ['']
