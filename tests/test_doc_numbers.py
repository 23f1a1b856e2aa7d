"""Every measured number quoted in README.md, configs/README.md and
docs/*.md names the committed JSON it comes from
(``<!-- json: docs/benchmarks/X.json -->`` then ``NUMBER<!--= {key/path} -->``,
see tools/misc/doc_numbers.py) and equals that JSON's value at the
decimals shown."""
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location(
        'decq_tool_doc_numbers', ROOT / 'tools' / 'misc' / 'doc_numbers.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


doc_numbers = _tool()
DOCS = doc_numbers.default_documents()
CELL_NUMBER = re.compile(r'(?<![\w.=])\d+(?:\.\d+)?(?![\w.])')


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_quoted_numbers_equal_their_json(doc):
    problems = doc_numbers.check_text(doc.read_text(encoding='utf-8'))
    assert not problems, '\n'.join(
        f'{doc.relative_to(ROOT)}:{p.line}: {p.message}' for p in problems)


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_measurement_is_quoted_without_its_json(doc):
    """Numbers with a unit (img/s, GiB, ms, %, TFLOP/s, x1.07, 196.4M) and
    numbers in a table column that quotes a JSON carry a reference."""
    problems = doc_numbers.untagged(doc.read_text(encoding='utf-8'))
    assert not problems, '\n'.join(
        f'{doc.relative_to(ROOT)}:{p.line}: {p.message}' for p in problems)


def test_untagged_measurements_are_found():
    head = '<!-- json: docs/benchmarks/x.json -->\n'
    table = ('| change | batch | img/s |\n|---|---:|---:|\n'
             '| before | 64 | 212.7 |\n'
             '| after | 64 | 223.0<!--= {img_s} --> (was 211.6) |\n'
             '| target | 64 | >= 300 |\n\n')
    prose = ('The GEMMs carry about 239 TFLOP in 360<!--= {ms} --> ms, '
             '84% of the ceiling; x1.25 faster, 3.3x, 196.4M and 2.0 GB\n'
             'in 0.94 ms. Targets: >= 525 img/s, at most 100 GiB, At least '
             '300 img/s, at most x1.10. Settings: 0.75 x GAN, (2 x 256), '
             '16 epochs, torch 2.11, CLIP-B/16, `12 ms` in code.\n'
             '```\n1.5 ms\n```\n    7 min\nAbout 4 minutes.\n')
    found = [(p.line, p.message.split(':')[0])
             for p in doc_numbers.untagged(head + table + prose)]
    assert sorted(found) == sorted([
        (4, '212.7'), (5, '211.6'), (8, '239 TFLOP'), (8, '84%'),
        (8, 'x1.25'), (8, '3.3x'), (8, '196.4M'), (8, '2.0 GB'),
        (9, '0.94 ms'), (14, '4 minutes')]), found
    assert 'quote it from a JSON' in doc_numbers.untagged('5 ms')[0].message


def test_the_command_fails_on_an_untagged_measurement(tmp_path, capsys):
    doc = tmp_path / 'doc.md'
    doc.write_text('It runs at 380 TFLOP/s.\n')
    assert doc_numbers.main([str(doc)]) == 1
    assert '380 TFLOP/s' in capsys.readouterr().err
    doc.write_text('It runs at >= 380 TFLOP/s.\n')
    assert doc_numbers.main([str(doc)]) == 0


def test_comments_leave_the_markdown_as_it_was():
    """A line that starts with ``<!--`` starts an HTML block, which would
    cut a paragraph or show the rest of the line unformatted: only a
    directive on a line of its own, after a blank line, may start one."""
    for doc in DOCS:
        lines = doc.read_text(encoding='utf-8').splitlines()
        for i, line in enumerate(lines):
            if not line.startswith('<!--'):
                continue
            where = f'{doc.relative_to(ROOT)}:{i + 1}'
            assert re.fullmatch(r'<!--[^>]*-->\s*', line), where
            assert i == 0 or not lines[i - 1].strip(), where


def test_the_numbers_of_issue_17_are_tied_to_json():
    """The numbers found stale (demo and benchmark times, the built-in
    rows, the decoder's GFLOPs) are quoted from a JSON now."""
    texts = {p.relative_to(ROOT).as_posix(): p.read_text(encoding='utf-8')
             for p in DOCS}
    refs = {name: list(doc_numbers.references(text))
            for name, text in texts.items()}
    exprs = {name: ' '.join(r.expr for r in rs) for name, rs in refs.items()}
    assert 'demo' in exprs['README.md']
    assert 'builtin_random' in exprs['README.md']
    assert 'decoder_flops' in exprs['configs/README.md']
    assert 'decoder_flops' in exprs['docs/benchmarks.md']
    assert 'name=RAE/psnr' in exprs['configs/README.md']
    assert sum(len(rs) for rs in refs.values()) >= 100
    for stale in ('220.8 ', '18.62 ± 0.07 |', 'About 4 minutes',
                  '21\ns with start-up', '6 min\n(`docs'):
        assert not any(stale in text for text in texts.values()), stale


def test_the_checker_catches_stale_numbers(tmp_path):
    bench = tmp_path / 'docs' / 'benchmarks'
    bench.mkdir(parents=True)
    (bench / 'x.json').write_text(json.dumps(
        {'rows': [{'name': 'RAE', 'psnr': 19.4312, 'flops': 221646551040}],
         'seconds': 428}))
    head = '<!-- json: docs/benchmarks/x.json -->\n'
    good = (head + '| RAE | 19.43<!--= {rows/name=RAE/psnr} --> | '
            '221.65<!--= {rows/0/flops} / 1e9 --> |\n'
            'took 7<!--= {seconds} // 60 --> min 08<!--= {seconds} % 60 --> '
            's, +3.7%<!--= 3.71 -->\n')
    assert doc_numbers.check_text(good, tmp_path) == []
    stale = good.replace('19.43', '18.62').replace('221.65', '220.8')
    problems = doc_numbers.check_text(stale, tmp_path)
    assert [p.line for p in problems] == [2, 2]
    assert 'x.json gives 19.43' in problems[0].message
    assert 'gives 221.6' in problems[1].message
    # decimals as the document shows them
    assert doc_numbers.update_text(stale, tmp_path) == good.replace(
        '221.65', '221.6')
    assert doc_numbers.update_text(
        good.replace('08<', '09<'), tmp_path) == good  # leading zero kept
    (bench / 'y.json').write_text(json.dumps({'img_s': 158.0,
                                              'copy / cast': {'ms': 8.9}}))
    assert doc_numbers.check_text(
        head + '8.9<!--= {y.json:copy \\/ cast/ms} -->', tmp_path) == []
    ratio = head + 'x2.71<!--= {y.json:img_s} / {rows/0/psnr} * 3 / 9 -->'
    assert doc_numbers.check_text(ratio, tmp_path) == []
    # a stale number names the file(s) its expression reads
    other, = doc_numbers.check_text(head + '157<!--= {y.json:img_s} -->',
                                    tmp_path)
    assert other.message.startswith(
        '157 but docs/benchmarks/y.json gives 158')
    both, = doc_numbers.check_text(ratio.replace('2.71', '2.8'), tmp_path)
    assert 'y.json and docs/benchmarks/x.json gives' in both.message

    example = '`<!-- json: docs/benchmarks/z.json -->` `1<!--= {a} -->`\n'
    assert doc_numbers.check_text(example + good, tmp_path) == []
    assert doc_numbers.check_text(
        head + example + '19.43<!--= {rows/0/psnr} -->', tmp_path) == []

    def message(text):
        problem, = doc_numbers.check_text(text, tmp_path)
        return problem.message

    assert 'no <!-- json' in message('1.0<!--= {seconds} -->')
    assert "no key 'psnr'" in message(head + '1<!--= {psnr} -->')
    assert '0 items with name' in message(head + '1<!--= {rows/name=X/a} -->')
    assert 'not allowed' in message(
        head + "1<!--= __import__('os').getpid() -->")
    assert 'is not a JSON file of docs/benchmarks' in message(
        '<!-- json: setup.py -->\n1<!--= 1 -->')
    assert 'does not exist' in message(
        '<!-- json: docs/benchmarks/z.json -->\n1<!--= 1 -->')


def test_the_flops_json_is_what_get_flops_measures_now():
    """The quoted FLOPs follow the code: a change of the models' cost
    fails here until ``get_flops.py --out`` rewrites the JSON (and
    ``doc_numbers.py --update`` the documents)."""
    spec = importlib.util.spec_from_file_location(
        'decq_tool_get_flops_docs', ROOT / 'tools/analysis/get_flops.py')
    get_flops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(get_flops)
    committed = json.loads(
        (ROOT / 'docs/benchmarks/flops_256_2026-12-03.json').read_text())
    now = [get_flops.measure(str(ROOT / c), 'XL')
           for c in get_flops.DEFAULT_CONFIGS]
    assert now == committed, (
        'the models cost other FLOPs than docs/benchmarks/'
        'flops_256_2026-12-03.json says: rerun python tools/analysis/'
        'get_flops.py --out docs/benchmarks/flops_256_<date>.json, point '
        'the documents at it and run python tools/misc/doc_numbers.py '
        '--update')


def test_the_builtin_random_json_is_what_the_code_gives_now():
    """The random-weight RAE row of the built-in suite, recomputed the
    way the suite does it (seed 0, the 40 bundled val crops): PSNR and
    parameters equal the committed JSON's."""
    import torch

    from decq_plugin.apis import build_tokenizer_from_config
    from decq_plugin.datasets.demo_images import DemoImageDataset
    from decq_plugin.evaluation.metrics.reconstruction import psnr
    committed = json.loads((ROOT / 'docs/benchmarks/'
                            'cpu_builtin_random_2026-12-03.json').read_text())
    row, = [r for r in committed['rows'] if r['name'] == 'RAE']
    torch.manual_seed(committed['settings']['seed'])
    tok = build_tokenizer_from_config(str(ROOT / row['config']), None)
    data = DemoImageDataset(mode='val', image_size=64)
    images = torch.stack([data[i]['inputs'] for i in range(len(data))])
    assert len(images) == row['num_images']
    with torch.inference_mode():
        recon = tok.decode(tok.encode(images))
    assert psnr(recon, images).mean().item() == pytest.approx(
        row['psnr'], rel=1e-6), ('rerun python tools/benchmark_tokenizers.py '
                                 '--suite builtin and commit its JSON')
    params = sum(p.numel() for name, p in tok.named_parameters()
                 if not name.startswith('teacher'))
    assert params == row['params']
