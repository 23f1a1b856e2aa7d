"""The documents cite only files that exist: every relative Markdown link
resolves, and every file path written as code (``tools/train.py``,
``configs/decq/...py``, ``benchmark_encode.py``) names a file of the
repository.

Paths the user provides or the tools write (``data/...``, ``work_dirs/...``,
outputs such as ``samples/``) and placeholders (``<wnid>``, ``$S1``,
``{algorithm}``, ``...``) are not checked; see :data:`USER_PREFIXES`.
"""
import itertools
import re
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / 'README.md', ROOT / 'configs' / 'README.md',
               *(ROOT / 'docs').rglob('*.md')])
# Where a relative code path may live besides the document's own folder.
BASES = (ROOT, ROOT / 'configs', ROOT / 'decq_plugin')
# Paths of the user's data and of what the tools write.
USER_PREFIXES = ('data/', 'work_dirs/', 'samples/', 'results/', 'out/',
                 'output/', 'flops.json')
# Extensions of files that a path in code must name exactly.
SOURCE_EXTENSIONS = ('.py', '.sh', '.json', '.md', '.yml', '.yaml', '.txt',
                     '.cfg', '.toml', '.in')
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
INLINE_CODE = re.compile(r'`([^`\n]+)`')
FENCE = re.compile(r'^```[^\n]*\n(.*?)^```', re.S | re.M)
TOKEN = re.compile(r"[^\s'\"`()\[\];=|]+")


def _expand_braces(token: str) -> List[str]:
    """``a{b,c}d`` -> ``['abd', 'acd']``."""
    parts = re.split(r'\{([^{}]*)\}', token)
    choices = [[p] if i % 2 == 0 else p.split(',')
               for i, p in enumerate(parts)]
    return [''.join(c) for c in itertools.product(*choices)]


def _is_placeholder(token: str) -> bool:
    return ('<' in token or '$' in token or '...' in token or
            '://' in token or token.startswith(('/', '~', '-')) or
            any(',' not in g for g in re.findall(r'\{([^{}]*)\}', token)))


def code_paths(text: str) -> Iterator[str]:
    """File paths written as code in a Markdown text."""
    spans = [m.group(1) for m in FENCE.finditer(text)]
    spans += [m.group(1) for m in INLINE_CODE.finditer(FENCE.sub('', text))]
    for span in spans:
        for token in TOKEN.findall(span):
            token = token.rstrip('.,:')
            if token.startswith('decq_plugin::'):  # a packaged config
                token = 'configs/' + token[len('decq_plugin::'):]
            path_like = (token.endswith(SOURCE_EXTENSIONS) or
                         token.endswith('/'))
            if not path_like or _is_placeholder(token):
                continue
            if '/' not in token and (token.startswith('.') or
                                     not token.endswith(('.py', '.sh'))):
                continue  # a bare name: only scripts and modules
            if token.startswith(USER_PREFIXES):
                continue
            yield token


def _exists(token: str, doc: Path) -> bool:
    for path in _expand_braces(token):
        if '/' not in path:  # a bare file name
            if not any(p.is_file() for p in ROOT.rglob(path)
                       if '.git' not in p.parts):
                return False
            continue
        bases = (doc.parent, *BASES)
        if not any((list(base.glob(path)) if '*' in path else
                    (base / path).exists()) for base in bases):
            return False
    return True


def _cases() -> List[Tuple[Path, str, str]]:
    cases = []
    for doc in DOCS:
        text = doc.read_text(encoding='utf-8')
        for target in LINK.findall(text):
            if not target.startswith(('http://', 'https://', 'mailto:', '#')):
                cases.append((doc, 'link', target))
        for token in sorted(set(code_paths(text))):
            cases.append((doc, 'code', token))
    return cases


def test_documents_exist_and_cite_files():
    assert ROOT / 'docs' / 'benchmarks.md' in DOCS
    kinds = {kind for _, kind, _ in _cases()}
    assert kinds == {'link', 'code'}  # the parser finds both kinds


@pytest.mark.parametrize('doc, kind, target', _cases(),
                         ids=lambda v: str(v.relative_to(ROOT))
                         if isinstance(v, Path) else str(v))
def test_cited_file_exists(doc, kind, target):
    if kind == 'link':
        path = (doc.parent / target.split('#')[0]).resolve()
        assert path.exists(), (f'{doc.relative_to(ROOT)} links to '
                               f'{target}, which does not exist')
    else:
        assert _exists(target, doc), (f'{doc.relative_to(ROOT)} cites '
                                      f'`{target}`, which is not in the '
                                      'repository')


def test_the_checker_catches_missing_files(tmp_path):
    """The parser reads paths out of code spans and fences, and the check
    refuses those that do not exist."""
    text = ('Run `python tools/train.py CFG` and `tools/nope.py`.\n'
            '```bash\nbash tools/dist_train.sh configs/gone/x.py 8\n'
            'python tools/sample.py --out data/x.npz  # user data\n```\n'
            'See `decq_plugin::demo/decq_tiny_1xb8-16e_demo-64.py`, '
            '`<wnid>/*.JPEG`, `lambda-q{0.5,2.0}_x.py`.\n')
    found = set(code_paths(text))
    assert found == {'tools/train.py', 'tools/nope.py',
                     'tools/dist_train.sh', 'configs/gone/x.py',
                     'tools/sample.py',
                     'configs/demo/decq_tiny_1xb8-16e_demo-64.py',
                     'lambda-q{0.5,2.0}_x.py'}
    doc = ROOT / 'README.md'
    assert _exists('tools/train.py', doc)
    assert _exists('configs/demo/decq_tiny_1xb8-16e_demo-64.py', doc)
    assert _exists('rae/', doc)  # below configs/
    assert not _exists('tools/nope.py', doc)
    assert not _exists('configs/gone/x.py', doc)
    assert not _exists('lambda-q{0.5,2.0}_x.py', doc)
    assert _exists('benchmark_encode.py', doc)  # a bare script name
