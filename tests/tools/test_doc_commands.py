"""Every command in the READMEs and every option example in the tools'
``--help`` texts parses with the tool's own argument parser, names files
that exist, and its config builds with its ``--cfg-options`` (no unknown
key); every ``--help`` description is a whole sentence.

Running each command in full needs ImageNet and GPUs; what is checked here
is what a user's copy-paste meets first. ``tools/demo.sh`` and
``tools/test.sh`` are run by CI as they are.
"""
import contextlib
import importlib.util
import io
import re
import shlex
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from mmengine.config import DictAction

from decq_plugin.utils.cli import doc_summary
from decq_plugin.utils.launch import load_config

ROOT = Path(__file__).resolve().parents[2]
READMES = (ROOT / 'README.md', ROOT / 'configs' / 'README.md')
FENCE = re.compile(r'^```(\w*)\n(.*?)^```', re.S | re.M)
TOOL = re.compile(r'(?:^|/)tools/[\w/]+\.(?:py|sh)$')
OPTION = re.compile(r'\b([a-z_]+(?:\.[A-Za-z_0-9]+)+)=("[^"]*"|[^\s)]+)')
S1 = 'configs/decq/decq_q8-l0369_dinov2-b-reg_vit-xl_8xb64-16e_in1k-256.py'
S2 = ('configs/ldm/'
      'ldm_dit-dh-xl_decq-q8-l0369-dinov2-b-reg_8xb128-80e_in1k-256.py')
# Scripts that take a config: script -> (tool, positional arguments of the
# script that the tool does not take, by index).
LAUNCHERS = {'dist_train.sh': ('train.py', [1]),
             'dist_test.sh': ('test.py', [2]),
             'slurm_train.sh': ('train.py', [0, 1, 3]),
             'slurm_test.sh': ('test.py', [0, 1, 4])}
# Run as they are by CI (.ci/run).
WHOLE_RUNS = ('demo.sh', 'test.sh')
# tools/export.py is changed on another branch; its --help is checked there.
PARSERS = sorted(p for p in (ROOT / 'tools').rglob('*.py')
                 if 'def parse_args' in p.read_text() and
                 p.name != 'export.py')


def _tool(path: Path):
    name = 'decq_doc_tool_' + '_'.join(path.relative_to(ROOT).with_suffix(
        '').parts)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def commands_in(text: str,
                where: str) -> Iterator[Tuple[str, str, List[str]]]:
    """``(where, tool path, arguments)`` of each command line in ``text``
    (continuation lines, ``\\``-ended or usage-style ``[--flag ...]``,
    joined)."""
    text = re.sub(r'\n\s+(?=\[?--)', ' ', text.replace('\\\n', ' '))
    for line in text.splitlines():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        for i, token in enumerate(tokens):
            if TOOL.search(token):
                # usage notation ([--flag X]) and "$@" (a shell function's
                # own arguments) are not arguments
                args = [a.strip('[]') for a in tokens[i + 1:] if a != '$@']
                yield where, token, [a for a in args if a]
                break


def readme_commands() -> Iterator[Tuple[str, str, List[str]]]:
    """Commands in the READMEs' shell blocks."""
    for doc in READMES:
        for fence in FENCE.finditer(doc.read_text()):
            if fence.group(1) in ('bash', 'sh', 'shell', ''):
                yield from commands_in(fence.group(2),
                                       str(doc.relative_to(ROOT)))


def help_commands() -> Iterator[Tuple[str, str, List[str]]]:
    """Commands in the tools' ``--help`` texts (description and epilog,
    both taken from the module docstring)."""
    for path in PARSERS:
        text = path.read_text()
        if 'epilog=__doc__' not in text:
            continue
        doc = _tool(path).__doc__
        yield from commands_in(doc, f'{path.name} --help')


COMMANDS = list(readme_commands()) + list(help_commands())


def _is_placeholder(value: str) -> bool:
    return '$' in value or value.isupper() or value.startswith(
        ('YOUR', 'CFG', 'CKPT', 'LDM', 'STAGE'))


def _built_without_unknown_keys(config: str, options) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        load_config(str(ROOT / config), options)
    assert 'WARNING' not in err.getvalue(), err.getvalue()


def test_readmes_have_commands():
    tools = {Path(t).name for _, t, _ in COMMANDS}
    assert {'dist_train.sh', 'sample.py', 'benchmark_tokenizers.py',
            'train.py'} <= tools


@pytest.mark.parametrize('doc, tool, args', COMMANDS,
                         ids=[f'{d}:{Path(t).name}:{i}' for i, (d, t, _)
                              in enumerate(COMMANDS)])
def test_readme_command_parses_and_builds(doc, tool, args, monkeypatch):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    path = ROOT / tool
    assert path.is_file(), f'{doc}: {tool} does not exist'
    if path.name in WHOLE_RUNS:
        return
    if path.suffix == '.sh':
        assert path.name in LAUNCHERS, f'{doc}: {tool} is not checked'
        target, drop = LAUNCHERS[path.name]
        args = [a for i, a in enumerate(args) if i not in drop]
        path = ROOT / 'tools' / target
    module = _tool(path)
    try:
        ns = module.parse_args(list(args))
    except SystemExit as err:
        pytest.fail(f'{doc}: {tool} {" ".join(args)}: the parser refused '
                    f'it (exit {err.code})')
    config = getattr(ns, 'config', None)
    if isinstance(config, str) and config.endswith('.py') and \
            not _is_placeholder(config):
        assert (ROOT / config).is_file(), f'{doc}: {config} does not exist'
        _built_without_unknown_keys(config, getattr(ns, 'cfg_options', None))
    suite = getattr(ns, 'suite', None)
    if isinstance(suite, str) and not _is_placeholder(suite):
        assert (ROOT / 'configs' / 'benchmark' / f'{suite}.json').is_file()


def _help(path: Path, capsys) -> str:
    module = _tool(path)
    with pytest.raises(SystemExit) as err:
        module.parse_args(['--help'])
    assert err.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize('path', PARSERS,
                         ids=[p.name for p in PARSERS])
def test_help_description_is_whole(path, capsys, monkeypatch):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    text = _help(path, capsys)
    summary = doc_summary(_tool(path).__doc__)
    assert summary.endswith('.'), summary
    assert ' '.join(text.split('\n\n')[1].split()) == summary


def _help_options(path: Path, capsys) -> List[Tuple[str, str]]:
    return OPTION.findall(_help(path, capsys))


@pytest.mark.parametrize('path', [ROOT / 'tools' / 'train.py',
                                  ROOT / 'tools' / 'test.py',
                                  ROOT / 'tools' / 'misc' /
                                  'print_config.py'],
                         ids=lambda p: p.name)
def test_help_option_examples_build(path, capsys, monkeypatch):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    found = _help_options(path, capsys)
    for key, value in found:
        options = {key: DictAction._parse_iterable(value.strip('"'))}
        errors = []
        for config in (S1, S2):
            try:
                _built_without_unknown_keys(config, options)
                break
            except (AssertionError, ValueError) as err:
                errors.append(str(err))
        else:
            pytest.fail(f'{path.name} --help: {key}={value} fits no shipped '
                        f'config: {errors}')


def test_every_help_with_an_option_example_is_checked(capsys, monkeypatch):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    checked = {'train.py', 'test.py', 'print_config.py'}
    for path in PARSERS:
        if _help_options(path, capsys):
            assert path.name in checked, path


def test_train_help_example_was_wrong_before():
    # The old example named keys that no config has.
    with pytest.raises((AssertionError, ValueError)):
        _built_without_unknown_keys(S1, {'train_cfg.max_iters': 10,
                                         'model.decoder.depth': 2})
