"""Checkpoints the documents load are where the commands they give write
them: ``work_dirs/<name>/epoch_<N>.pth`` names a config (``tools/train.py``
writes to ``work_dirs/<config name>/``) whose schedule has N epochs, or a
work dir a documented command sets (``--work-dir``, ``tools/demo.sh``)."""
import re
from pathlib import Path
from typing import List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / 'README.md', ROOT / 'configs' / 'README.md',
               *(ROOT / 'docs').rglob('*.md')])
CHECKPOINT = re.compile(r'work_dirs/([\w./-]+?)/epoch_(\d+)\.pth')
WORK_DIR_ARG = re.compile(r'--work-dir\s+(work_dirs/[\w./-]+)')


def config_names() -> Set[str]:
    return {p.stem for p in (ROOT / 'configs').rglob('*.py')
            if '_base_' not in p.parts}


def demo_work_dirs() -> Set[str]:
    """Work dirs ``tools/demo.sh`` trains into with its default WORK_DIR."""
    text = (ROOT / 'tools' / 'demo.sh').read_text(encoding='utf-8')
    work = re.search(r'WORK=\$\{1:-(work_dirs/[\w/-]+)\}', text).group(1)
    return {f'{work}/{sub}'
            for sub in re.findall(r'--work-dir "\$WORK/(\w+)"', text)}


def documented_work_dirs(texts: List[str]) -> Set[str]:
    return {d for text in texts for d in WORK_DIR_ARG.findall(text)}


def bad_checkpoints(text: str, configs: Set[str],
                    work_dirs: Set[str]) -> List[Tuple[str, str]]:
    """``(path, why)`` for each checkpoint path of ``text`` that no
    documented command writes."""
    out = []
    for match in CHECKPOINT.finditer(text):
        name, epoch = match.group(1), int(match.group(2))
        if f'work_dirs/{name}' in work_dirs:
            continue
        if name not in configs:
            out.append((match.group(0), f"'{name}' is not a config name "
                        'nor a --work-dir of a documented command'))
            continue
        epochs = re.search(r'-(\d+)e_', name)
        if epochs and int(epochs.group(1)) != epoch:
            out.append((match.group(0), f'{name} trains '
                        f'{epochs.group(1)} epochs'))
    return out


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_loaded_checkpoints_are_where_the_recipe_writes_them(doc):
    texts = [d.read_text(encoding='utf-8') for d in DOCS]
    work_dirs = demo_work_dirs() | documented_work_dirs(texts)
    bad = bad_checkpoints(doc.read_text(encoding='utf-8'), config_names(),
                          work_dirs)
    assert not bad, f'{doc.relative_to(ROOT)}: {bad}'


def test_the_check_catches_a_short_name():
    configs = config_names()
    work_dirs = demo_work_dirs()
    assert 'work_dirs/demo/tokenizer' in work_dirs
    text = ("tok = build('work_dirs/decq/epoch_16.pth')\n"
            'work_dirs/rae_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256/'
            'epoch_80.pth work_dirs/demo/tokenizer/epoch_16.pth')
    bad = bad_checkpoints(text, configs, work_dirs)
    assert [path for path, _ in bad] == [
        'work_dirs/decq/epoch_16.pth',
        'work_dirs/rae_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256/epoch_80.pth']
