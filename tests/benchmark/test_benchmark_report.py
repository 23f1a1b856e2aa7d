"""Report writers on a fixed, hand-made result set: exact Markdown, CSV and
JSON content, the notes, the trade-off plot as a PNG of the stated size,
and the gFID file reader."""
import csv
import json
import struct

import pytest

from decq_plugin.benchmark.report import (CSV_FIELDS, PLOT_DPI, PLOT_SIZE_IN,
                                          build_rows, markdown_report,
                                          markdown_table,
                                          read_generation_results,
                                          report_notes, tradeoff_plot,
                                          write_csv, write_reports)


def _result(name, psnr, enc, dec, run_id='run-b', key=None, **metrics):
    return dict(
        name=name, key=key or name, random_weights=False,
        config=f'configs/{name}.py', cfg_options={}, checkpoint=f'{name}.pth',
        metrics=dict(psnr=psnr, num_images=4, **metrics),
        costs=dict(params=2_500_000, encoder_params=1_500_000,
                   condenser_params=250_000, decoder_params=750_000,
                   encode_flops=3_000_000_000, decode_flops=25_000_000),
        throughput=dict(encode_images_per_s=enc, decode_images_per_s=dec,
                        batch_size=4, warmup=1, repeats=3, device='cpu',
                        device_name='Test CPU', autocast='none',
                        run_id=run_id))


@pytest.fixture
def results():
    return [
        _result('RAE', 19.134, 100.0, 50.0, ssim=0.51234, rfid=0.5678,
                lpips=0.12345),
        _result('DecQ', 22.755, 80.0, 60.0, ssim=0.6, rfid=0.25,
                lpips=0.1),
    ]


SETTINGS = dict(dataset=dict(type='DemoImageDataset', mode='val'),
                num_images=4, batch_size=2,
                metrics=['lpips', 'psnr', 'rfid', 'ssim'],
                rfid=dict(feature_extractor=None),
                lpips=dict(net='vgg', pretrained_trunk=True), autocast='none')


def test_rows_ratios_relative_to_first(results):
    rows = build_rows(results, gfid={'DecQ': 1.8}, paper={'RAE': {'a': 1}})
    assert [r['name'] for r in rows] == ['RAE', 'DecQ']
    assert rows[0]['encode_vs_first'] == 1.0
    assert rows[1]['encode_vs_first'] == pytest.approx(0.8)
    assert rows[1]['decode_vs_first'] == pytest.approx(1.2)
    assert rows[0]['gfid'] is None and rows[1]['gfid'] == 1.8
    assert rows[0]['paper'] == {'a': 1} and rows[1]['paper'] == {}
    with pytest.raises(ValueError, match='no results'):
        build_rows([])


def test_markdown_table_exact(results):
    rows = build_rows(results)
    assert markdown_table(rows) == (
        '| Tokenizer | PSNR ↑ | SSIM ↑ | rFID ↓ | LPIPS ↓ | encode img/s | '
        'decode img/s | params (M) | GFLOPs enc / dec |\n'
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
        '| RAE | 19.13 | 0.5123 | 0.57 | 0.1235 | 100.0 (x1.00) | '
        '50.0 (x1.00) | 2.50 | 3.00 / 0.025 |\n'
        '| DecQ | 22.75 | 0.6000 | 0.25 | 0.1000 | 80.0 (x0.80) | '
        '60.0 (x1.20) | 2.50 | 3.00 / 0.025 |')


def test_markdown_gfid_and_paper_columns(results):
    del results[1]['metrics']['rfid']  # a metric left out shows '-'
    rows = build_rows(results, gfid={'RAE': 2.16},
                      paper={'RAE': {'rPSNR': 19.13, 'gFID': 2.16}})
    lines = markdown_table(rows).split('\n')
    assert lines[0].endswith('| gFID ↓ | paper |')
    assert lines[1].endswith('|---:|---|')
    assert lines[2].endswith('| 2.16 | rPSNR 19.13, gFID 2.16 |')
    assert lines[3] == ('| DecQ | 22.75 | 0.6000 | - | 0.1000 | 80.0 (x0.80) '
                        '| 60.0 (x1.20) | 2.50 | 3.00 / 0.025 | - | - |')
    report = markdown_report('Title', rows, ['note one', 'note two'])
    assert report.startswith('# Title\n\n| Tokenizer')
    assert report.endswith('\n\n- note one\n- note two\n')


def test_csv_exact(results, tmp_path):
    path = tmp_path / 'b.csv'
    write_csv(str(path), build_rows(results, gfid={'DecQ': 1.8}))
    text = path.read_text()
    lines = text.split('\n')
    assert lines[0] == ','.join(CSV_FIELDS)
    assert lines[1] == (
        'RAE,19.134,0.51234,0.5678,0.12345,100.0,1.0,50.0,1.0,2500000,'
        '1500000,250000,750000,3000000000,25000000,,4,False,configs/RAE.py,'
        '{},RAE.pth,{},,,,,')  # no std: untrained
    assert lines[2].startswith('DecQ,22.755,0.6,0.25,0.1,80.0,0.8,60.0,1.2,')
    assert ',1.8,4,False,' in lines[2]
    assert lines[3] == '' and len(lines) == 4
    parsed = list(csv.DictReader(text.splitlines()))
    assert float(parsed[1]['decode_vs_first']) == pytest.approx(1.2)


def test_notes_flag_what_is_not_comparable(results):
    notes = report_notes(SETTINGS, results)
    text = '\n'.join(notes)
    assert 'DemoImageDataset(mode=' in notes[0] and '4 images' in notes[0]
    assert 'InceptionV3FeatureExtractor' in text
    assert '50k ImageNet val' in text  # 4 < 50k images
    assert 'NOT comparable' not in text and 'RANDOM' not in text
    assert 'relative to RAE' in text and 'median of 3 runs' in text
    assert 'earlier run' not in text

    offline = dict(SETTINGS, lpips=dict(net='alex', pretrained_trunk=False),
                   rfid=dict(feature_extractor=dict(
                       type='RandomConvFeatureExtractor')))
    results[1].update(random_weights=True, key='RAE')
    results[0]['throughput']['run_id'] = 'run-a'
    text = '\n'.join(report_notes(offline, results))
    assert text.count('NOT comparable') == 2
    assert "RANDOM weights (no checkpoint) for ['DecQ']" in text
    assert "'DecQ' reconstructs with the same tokenizer as 'RAE'" in text
    assert "Throughput of ['RAE'] comes from an earlier run" in text


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n'
    assert data[12:16] == b'IHDR'
    return struct.unpack('>II', data[16:24])


def test_tradeoff_plot_png(results, tmp_path):
    path = tmp_path / 'plot.png'
    rows = build_rows(results, gfid={'RAE': 2.16, 'DecQ': 1.8})
    assert tradeoff_plot(str(path), rows, 'a title')
    expected = (round(PLOT_SIZE_IN[0] * PLOT_DPI),
                round(PLOT_SIZE_IN[1] * PLOT_DPI))
    assert _png_size(path) == expected == (960, 720)
    assert path.stat().st_size > 5000  # drawn, not blank
    none = tmp_path / 'none.png'
    assert not tradeoff_plot(str(none), build_rows(results), 't')
    assert not none.exists()


def test_write_reports(results, tmp_path):
    paths = write_reports(str(tmp_path), 'T', SETTINGS, results,
                          gfid={'DecQ': 1.8}, extra=dict(run_id='x'))
    assert set(paths) == {'markdown', 'csv', 'json', 'plot'}
    summary = json.loads((tmp_path / 'benchmark.json').read_text())
    assert summary['title'] == 'T' and summary['run_id'] == 'x'
    assert [r['name'] for r in summary['rows']] == ['RAE', 'DecQ']
    assert summary['rows'][1]['encode_vs_first'] == pytest.approx(0.8)
    assert summary['rows'][1]['gfid'] == 1.8
    assert summary['results'][0]['metrics']['psnr'] == 19.134
    assert summary['notes'] == report_notes(SETTINGS, results)
    assert (tmp_path / 'benchmark.md').read_text().startswith('# T\n')


def test_read_generation_results(tmp_path):
    path = tmp_path / 'g.json'
    path.write_text(json.dumps({'RAE': 2.16, 'DecQ': {'gfid': 1.8},
                                'Other': {'fid': 3}}))
    assert read_generation_results(str(path)) == {'RAE': 2.16, 'DecQ': 1.8,
                                                   'Other': 3.0}
    path.write_text(json.dumps({'RAE': 'x'}))
    with pytest.raises(ValueError, match="'RAE' needs a number"):
        read_generation_results(str(path))
    path.write_text('[1, 2]')
    with pytest.raises(ValueError, match='expected an object'):
        read_generation_results(str(path))
