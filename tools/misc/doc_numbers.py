"""Check (or rewrite) the measured numbers quoted in the Markdown documents
against the committed JSON files they come from.

    python tools/misc/doc_numbers.py           # check the documents
    python tools/misc/doc_numbers.py --update  # rewrite them from the JSONs

The documents: README.md, configs/README.md and docs/*.md.

The convention, invisible once rendered:

* ``<!-- json: docs/benchmarks/NAME.json -->`` names the file that the
  numbers after it come from (until the next such line; the paper's
  numbers come from the suites, ``configs/benchmark/NAME.json``);
* a number followed by ``<!--= EXPR -->`` (``%`` may stand between them)
  is the value of ``EXPR`` rounded to the decimals the document shows.
  ``EXPR`` is arithmetic (``+ - * / // %``, parentheses, numbers) over
  ``{path}``: keys separated by ``/``, an integer indexes a list and
  ``key=value`` picks the list item whose ``key`` is ``value``, e.g.
  ``{rows/name=RAE/psnr}``, ``{0/decoder_flops} / 1e9`` (``\\/`` is a
  ``/`` inside a key);
  ``{OTHER.json:path}`` reads another file of ``docs/benchmarks/``.

``--update`` keeps each number's decimals, sign and thousands separators, so
a table follows its JSON after a benchmark is rerun.

A number without a reference is refused where it reads as a measurement:
with a unit of one (``%``, ``img/s``, ``GiB``, ``ms``, ``TFLOP/s``, ``dB``,
``M`` parameters, a ratio ``x1.07`` or ``3.3x``; targets after ``>=``,
``<=``, "at most" or "at least" are not measurements), or in a table
column where another cell quotes a JSON. Code (fenced, indented, in
backticks) is not read.
"""
import argparse
import ast
import json
import operator
import re
import sys
from pathlib import Path
from typing import (Any, Callable, Dict, Iterator, List, NamedTuple, Optional,
                    Tuple)

ROOT = Path(__file__).resolve().parents[2]
JSON_DIRECTIVE = re.compile(r'<!--\s*json:\s*(\S+?)\s*-->')
NUMBER = r'[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?'
REFERENCE = re.compile(
    rf'(?P<num>{NUMBER})(?P<pct>%?)<!--=\s*(?P<expr>.*?)\s*-->')
PATH = re.compile(r'\{([^{}]+)\}')
CODE_SPAN = re.compile(r'`[^`\n]*`')
#: A number with the unit of a measurement (or a ratio), as prose quotes it.
MEASURED = re.compile(
    r'(?<![\w.\-/=^])(?:x\d+(?:\.\d+)?(?![\w.])|\d+(?:,\d{3})*(?:\.\d+)?'
    r'(?:x(?!\w)|\s?(?:%|img/s|images/s|steps/s|GiB|GB|MiB|MB|TB/s|'
    r'TFLOPs?(?:/s)?|GFLOPs?|dB)(?!\w)'
    r'|\s(?:ms|s|min|minutes|seconds|hours)\b|M\b))')
CELL_NUMBER = re.compile(r'(?<![\w.=])\d+(?:\.\d+)?(?![\w.])')
TARGET = re.compile(r'(?:[<>]=|\bat most|\bat least)\s*$', re.IGNORECASE)
#: Where quoted numbers may come from: measurements, and the suites' copies
#: of the paper's numbers (``paper`` of each tokenizer).
SOURCES = ('docs/benchmarks/', 'configs/benchmark/')
OPERATORS: Dict[type, Callable] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod, ast.USub: operator.neg, ast.UAdd: operator.pos}


class DocNumberError(ValueError):
    """A reference that cannot be evaluated (file, key or expression)."""


class Reference(NamedTuple):
    """One quoted number: where it is, what it says, where it comes from."""
    line: int
    start: int       # offset of the number in the document
    end: int         # offset just after the number
    quoted: str
    json_file: Optional[str]
    expr: str


class Problem(NamedTuple):
    line: int
    message: str


def default_documents(root: Path = ROOT) -> List[Path]:
    return sorted([root / 'README.md', root / 'configs' / 'README.md',
                   *(root / 'docs').glob('*.md')])


def _outside_code(text: str, matches: Iterator[re.Match]) -> List[re.Match]:
    """``matches`` that are not inside a backtick code span (examples of
    the convention are not references)."""
    spans = [m.span() for m in CODE_SPAN.finditer(text)]
    return [m for m in matches
            if not any(a <= m.start() < b for a, b in spans)]


def references(text: str) -> Iterator[Reference]:
    """Every quoted number of ``text`` with the JSON file in force there."""
    directives = [(m.start(), m.group(1)) for m in
                  _outside_code(text, JSON_DIRECTIVE.finditer(text))]
    for m in _outside_code(text, REFERENCE.finditer(text)):
        in_force = [name for pos, name in directives if pos < m.start()]
        yield Reference(text.count('\n', 0, m.start()) + 1, m.start('num'),
                        m.end('num'), m.group('num'),
                        in_force[-1] if in_force else None, m.group('expr'))


def _blank_code_and_references(text: str) -> str:
    """``text`` with code, references and comments removed, line by line
    (line numbers kept)."""
    text = re.sub(r'```.*?```', lambda m: '\n' * m.group(0).count('\n'),
                  text, flags=re.S)
    text = re.sub(r'^(?: {4}|\t).*$', '', text, flags=re.M)
    text = REFERENCE.sub('\0', text)
    text = re.sub(r'<!--.*?-->', lambda m: '\n' * m.group(0).count('\n'),
                  text, flags=re.S)
    text = CODE_SPAN.sub('', text)
    return re.sub(r'\]\([^)\n]*\)', ']', text)


def _table_columns_untagged(lines: List[str]) -> Iterator[Tuple[int, str]]:
    """(line, number) of numbers without a reference in the table columns
    where some cell quotes a JSON (``lines``: the raw document)."""
    block: List[tuple] = []
    for i, line in enumerate(lines + [''], 1):
        if line.startswith('|'):
            block.append((i, line.strip().strip('|').split('|')))
            continue
        body, block = block[2:], []
        tagged = {j for _, cells in body for j, cell in enumerate(cells)
                  if '<!--=' in cell}
        for row, cells in body:
            for j in sorted(tagged & set(range(len(cells)))):
                bare = _blank_code_and_references(cells[j]).replace('\0', '')
                bare = re.sub(r'(?:[<>]=|at most|at least)\s*x?\d+(?:\.\d+)?',
                              '', bare, flags=re.IGNORECASE)
                for number in CELL_NUMBER.findall(bare):
                    yield row, number


def untagged(text: str) -> List[Problem]:
    """Numbers of ``text`` that read as measurements but name no JSON."""
    problems = [Problem(row, f'{number}: in a column that quotes a JSON, '
                        'without <!--= EXPR -->')
                for row, number in _table_columns_untagged(text.splitlines())]
    for i, line in enumerate(_blank_code_and_references(text).splitlines(), 1):
        for m in MEASURED.finditer(line):
            if not TARGET.search(line[:m.start()]):
                problems.append(Problem(i, f'{m.group(0)}: a measurement '
                                        'without <!--= EXPR --> (quote it '
                                        'from a JSON, say it is not '
                                        'recorded, or write a target '
                                        'after >= or "at most")'))
    return sorted(set(problems))


def lookup(data: Any, path: str) -> Any:
    """The value at ``path`` (``a/0/name=RAE/psnr``; ``\\/`` stands for a
    ``/`` inside a key) of parsed JSON."""
    value = data
    for key in re.split(r'(?<!\\)/', path):
        key = key.strip().replace('\\/', '/')
        if isinstance(value, list) and '=' in key:
            field, wanted = key.split('=', 1)
            matches = [item for item in value if isinstance(item, dict)
                       and str(item.get(field)) == wanted]
            if len(matches) != 1:
                raise DocNumberError(f"{len(matches)} items with "
                                     f"{field} == {wanted!r} (path {path})")
            value = matches[0]
        elif isinstance(value, list) and key.lstrip('-').isdigit():
            try:
                value = value[int(key)]
            except IndexError:
                raise DocNumberError(f'no item {key} (path {path})') from None
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            raise DocNumberError(f'no key {key!r} (path {path})')
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DocNumberError(f'{path} is {value!r}, not a number')
    return value


def _evaluate(node: ast.AST, values: List[float]) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, values)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.Name) and re.fullmatch(r'_v\d+', node.id):
        return values[int(node.id[2:])]
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        return OPERATORS[type(node.op)](_evaluate(node.left, values),
                                        _evaluate(node.right, values))
    if isinstance(node, ast.UnaryOp) and type(node.op) in OPERATORS:
        return OPERATORS[type(node.op)](_evaluate(node.operand, values))
    raise DocNumberError(f'not allowed in an expression: {ast.dump(node)}')


def evaluate(expr: str, data: Any,
             load: Optional[Callable[[str], Any]] = None) -> float:
    """The value of ``expr`` (arithmetic over ``{path}``) on ``data``; a
    ``{OTHER.json:path}`` reads ``docs/benchmarks/OTHER.json`` through
    ``load``."""
    values: List[float] = []

    def name(match: re.Match) -> str:
        path, source = match.group(1), data
        if '.json:' in path:
            other, path = path.split('.json:', 1)
            if load is None:
                raise DocNumberError(f'{other}.json: no other file here')
            source = load(f'docs/benchmarks/{other.strip()}.json')
        values.append(lookup(source, path))
        return f'_v{len(values) - 1}'

    try:
        tree = ast.parse(PATH.sub(name, expr), mode='eval')
    except SyntaxError as err:
        raise DocNumberError(f'bad expression {expr!r}: {err.msg}') from None
    try:
        return float(_evaluate(tree, values))
    except ZeroDivisionError:
        raise DocNumberError(f'{expr!r} divides by zero') from None


def decimals(quoted: str) -> int:
    return len(quoted.split('.')[1]) if '.' in quoted else 0


def matches(quoted: str, value: float) -> bool:
    """Whether ``value`` rounds to ``quoted`` at the decimals it shows."""
    shown = float(quoted.replace(',', ''))
    return abs(shown - value) <= 0.5 * 10 ** -decimals(quoted) * (1 + 1e-9)


def formatted(quoted: str, value: float) -> str:
    """``value`` written as ``quoted`` is: decimals, sign, separators and
    leading zeros (``08`` of ``7 min 08 s``)."""
    sep = ',' if ',' in quoted else ''
    sign = '+' if quoted.startswith('+') else ''
    text = format(value, f'{sign}{sep}.{decimals(quoted)}f')
    digits = quoted.lstrip('+-').split('.')[0]
    if len(digits) > 1 and digits.startswith('0'):
        head, dot, tail = text.partition('.')
        text = head.zfill(len(digits)) + dot + tail
    return text


def _sources(ref: 'Reference') -> str:
    """The JSON file(s) ``ref``'s expression reads, for messages (the
    ``{OTHER.json:path}`` split of :func:`evaluate`)."""
    names = []
    for path in PATH.findall(ref.expr):
        name = (f"docs/benchmarks/{path.split('.json:', 1)[0]}.json"
                if '.json:' in path else ref.json_file)
        if name not in names:
            names.append(name)
    return ' and '.join(str(n) for n in names) or str(ref.json_file)


def check_text(text: str, root: Path = ROOT) -> List[Problem]:
    """Problems of the references of ``text`` (empty: all numbers agree)."""
    cache: Dict[str, Any] = {}
    problems = []
    for ref in references(text):
        try:
            value = evaluate(ref.expr, _load(ref.json_file, root, cache),
                             lambda name: _load(name, root, cache))
        except DocNumberError as err:
            problems.append(Problem(ref.line, f'{ref.quoted}: {err}'))
            continue
        if not matches(ref.quoted, value):
            problems.append(Problem(
                ref.line, f'{ref.quoted} but {_sources(ref)} gives '
                f'{formatted(ref.quoted, value)} ({ref.expr})'))
    return problems


def update_text(text: str, root: Path = ROOT) -> str:
    """``text`` with every quoted number rewritten from its JSON."""
    cache: Dict[str, Any] = {}
    pieces, last = [], 0
    for ref in references(text):
        value = evaluate(ref.expr, _load(ref.json_file, root, cache),
                         lambda name: _load(name, root, cache))
        pieces += [text[last:ref.start], formatted(ref.quoted, value)]
        last = ref.end
    return ''.join(pieces) + text[last:]


def _load(name: Optional[str], root: Path, cache: Dict[str, Any]) -> Any:
    if name is None:
        raise DocNumberError('no <!-- json: FILE --> line before it')
    if not name.startswith(SOURCES) or not name.endswith('.json'):
        raise DocNumberError(f'{name} is not a JSON file of '
                             f"{' or '.join(SOURCES)}")
    if name not in cache:
        path = root / name
        if not path.is_file():
            raise DocNumberError(f'{name} does not exist')
        try:
            cache[name] = json.loads(path.read_text(encoding='utf-8'))
        except json.JSONDecodeError as err:
            raise DocNumberError(f'{name} is not JSON: {err}') from None
    return cache[name]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description='Check the numbers quoted in the documents against '
        'their JSON files (docs/benchmarks/*.json).',
        epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('docs', nargs='*', type=Path,
                        help='default: README.md, configs/README.md, '
                        'docs/*.md')
    parser.add_argument('--update', action='store_true',
                        help='rewrite the numbers from their JSON files')
    args = parser.parse_args(argv)
    failed = 0
    for doc in args.docs or default_documents():
        text = doc.read_text(encoding='utf-8')
        if args.update:
            try:
                new = update_text(text)
            except DocNumberError as err:
                print(f'{doc}: {err}', file=sys.stderr)
                failed += 1
                continue
            if new != text:
                doc.write_text(new, encoding='utf-8')
                print(f'updated {doc}')
        text = doc.read_text(encoding='utf-8')
        for problem in check_text(text) + untagged(text):
            print(f'{doc}:{problem.line}: {problem.message}', file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
