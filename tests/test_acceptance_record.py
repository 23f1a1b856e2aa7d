"""The committed GPU acceptance runs (``docs/benchmarks/*acceptance*.json``,
from ``tools/analysis/gpu_smoke.py``) passed, and each ran exactly the files
of the commit it names: its recorded tree hash is that commit's tree."""
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Named h200_acceptance_stage<N>_<date>.json when committed.
RECORDS = sorted((ROOT / 'docs' / 'benchmarks').glob('*acceptance*.json'))


def _git(*args):
    return subprocess.run(['git', *args], cwd=ROOT, capture_output=True,
                          text=True)


@pytest.mark.parametrize('path', RECORDS, ids=lambda p: p.name)
def test_record_passed_on_the_files_of_its_commit(path):
    record = json.loads(path.read_text())
    assert record['ok'] is True
    assert record['gpu'] != 'cpu'
    assert all(step['ok'] for run in record['runs']
               for step in run['steps'].values())
    if _git('rev-parse', '--git-dir').returncode != 0:
        pytest.skip('not a git checkout')
    commit = record['commit']
    if _git('cat-file', '-e', f'{commit}^{{commit}}').returncode != 0:
        pytest.skip(f'commit {commit} is not in this clone (shallow?)')
    tree = _git('rev-parse', f'{commit}^{{tree}}').stdout.strip()
    assert record['tree'] == tree, (
        f'{path.name} ran files whose tree is {record["tree"]}, not those '
        f'of commit {commit} ({tree})')
