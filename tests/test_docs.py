"""The README and the docs pages say only what exists: every relative link and #anchor
resolves (GitHub's heading slugs), every ``tools/`` command shown in a code block parses
with that tool's own argparse parser (nothing runs), and every config path shown exists."""
import re
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Iterator, List, Set, Tuple

import pytest

from .conftest import REPO, load_tool

PAGES = [REPO / 'README.md'] + sorted((REPO / 'docs').glob('*.md'))
FENCE = re.compile(r'^(```|~~~)(\w*)\s*$')
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')
CONFIG_FAMILIES = ('retinanet', 'mask_rcnn', 'detr', 'semfpn', 'classification', 'examples',
                   '_base_')
CONFIG_PATH = re.compile(r'(?<![\w:/.-])(?:configs/)?(?:%s)/[\w./-]+\.py\b'
                         % '|'.join(CONFIG_FAMILIES))
TOOL_PATH = re.compile(r'(?<![\w/.-])tools/[\w./-]+\.(?:py|sh)\b')
SHELL_FENCES = ('bash', 'sh', 'shell', 'console')  # output and file trees are ```text or bare


def _split(text: str) -> Tuple[List[str], List[Tuple[str, List[str]]]]:
    """A page's prose lines (code fences removed) and its fenced blocks (language, lines)."""
    prose, blocks, block = [], [], None
    for line in text.split('\n'):
        match = FENCE.match(line.strip())
        if block is None and match:
            block = (match.group(2), [])
        elif block is not None and line.strip() in ('```', '~~~'):
            blocks.append(block)
            block = None
        elif block is not None:
            block[1].append(line)
        else:
            prose.append(line)
    assert block is None, 'a code fence is never closed'
    return prose, blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link targets and markup dropped, lower case,
    punctuation other than ``-`` / ``_`` removed, spaces to hyphens."""
    text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading)
    text = re.sub(r'[^\w\- ]', '', text.strip().lower())
    return text.replace(' ', '-')


@lru_cache(maxsize=None)
def anchors(page: Path) -> Set[str]:
    """Every anchor of a markdown page (repeated headings get -1, -2, ... as on GitHub)."""
    prose, _ = _split(page.read_text())
    found: Set[str] = set()
    for line in prose:
        match = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
        if match:
            base = slug(match.group(1))
            name, n = base, 0
            while name in found:
                n += 1
                name = f'{base}-{n}'
            found.add(name)
    return found


def _links(page: Path) -> Iterator[str]:
    prose, _ = _split(page.read_text())
    for line in prose:
        for target in LINK.findall(re.sub(r'`[^`]*`', '', line)):
            if not re.match(r'[a-z]+:', target):  # http(s), mailto: not checked offline
                yield target


def broken_links(page: Path) -> List[str]:
    """The relative links and anchors of ``page`` that lead nowhere."""
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition('#')
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f'{target}: no file {dest}')
        elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
            broken.append(f'{target}: no heading with anchor #{anchor} in {dest.name}')
    return broken


def shown_commands(page: Path) -> Iterator[List[str]]:
    """The commands of the shell code blocks, continuation lines joined, comments dropped,
    split at ``&&`` / ``;`` / ``|``."""
    _, blocks = _split(page.read_text())
    for lang, lines in blocks:
        if lang not in SHELL_FENCES:
            continue
        text = re.sub(r'\\\n\s*', ' ', '\n'.join(lines))
        for line in text.split('\n'):
            line = line.split(' #')[0].strip()
            if line.startswith('#') or not line:
                continue
            for part in re.split(r'\s(?:&&|;|\|)\s', line):
                yield shlex.split(part)


def _unbracket(tokens: List[str]) -> List[str]:
    """A usage line's optional parts as if given: ``[--size 512]`` -> ``--size 512``,
    ``pca|mean|norm`` -> ``pca``."""
    return [t.strip('[]').split('|')[0] for t in tokens if t.strip('[]')]


def tool_invocations(page: Path) -> Iterator[Tuple[str, List[str]]]:
    """(tool path, its arguments) of every shown command that runs something in tools/."""
    for tokens in shown_commands(page):
        for i, token in enumerate(tokens):
            if TOOL_PATH.fullmatch(token):
                yield token, _unbracket(tokens[i + 1:])
                break


def _pages_ids():
    return [str(p.relative_to(REPO)) for p in PAGES]


@pytest.mark.parametrize('page', PAGES, ids=_pages_ids())
def test_links_and_anchors_resolve(page):
    assert list(_links(page)) or page.name != 'README.md', 'no links found: the parser is broken'
    assert broken_links(page) == []


@pytest.mark.parametrize('page', PAGES, ids=_pages_ids())
def test_shown_paths_exist(page):
    """Every config and tools/ path named on the page (prose and code) exists; a pattern
    with braces or wildcards names several files and is not checked."""
    text = page.read_text()
    missing = []
    for pattern in (CONFIG_PATH, TOOL_PATH):
        for path in set(pattern.findall(text)):
            if '{' in path or '*' in path:
                continue
            in_configs = not path.startswith(('configs/', 'tools/'))  # e.g. `retinanet/x.py`
            if not (REPO / 'configs' / path if in_configs else REPO / path).exists():
                missing.append(path)
    assert missing == []


def _parse(tool: str, args: List[str]) -> None:
    """Parse ``args`` with ``tool``'s parser (argparse exits 2 on a bad line) or, for a
    shell launcher, check its config argument exists."""
    if tool.endswith('.sh'):
        assert (REPO / tool).exists(), f'{tool} does not exist'
        configs = [a for a in args if a.endswith('.py')]
        for config in configs:
            assert (REPO / config).exists(), f'{tool}: config {config} does not exist'
        return
    parser = load_tool(tool).build_parser()
    try:
        parser.parse_args(args)
    except SystemExit as exc:
        raise AssertionError(f'{tool} {" ".join(args)}: argparse refused it (exit {exc.code})')


@pytest.mark.parametrize('page', PAGES, ids=_pages_ids())
def test_shown_tool_commands_parse(page):
    shown = list(tool_invocations(page))
    if page.name == 'README.md':
        assert {t for t, _ in shown} >= {'tools/quickstart.sh', 'tools/run_tests.sh'}
    for tool, args in shown:
        _parse(tool, args)


def test_the_checks_catch_breakage(tmp_path):
    """A broken link, a wrong anchor, a missing config and a command its tool refuses are
    each caught (so the checks above are not vacuous)."""
    page = tmp_path / 'page.md'
    page.write_text('# Title\n\n## Two words\n\n[ok](#two-words) [bad](#three-words) '
                    f'[gone](missing.md) [file]({REPO / "README.md"})\n\n'
                    '```bash\npython tools/train.py configs/nope/none.py --no-such-flag\n```\n')
    assert [b.split(':')[0] for b in broken_links(page)] == ['#three-words', 'missing.md']
    ((tool, args), ) = tool_invocations(page)
    with pytest.raises(AssertionError, match='argparse refused'):
        _parse(tool, args)
    with pytest.raises(AssertionError, match='does not exist'):
        _parse('tools/dist_train.sh', ['configs/nope/none.py', '2'])
    assert slug("Speed and memory: pvt_mm vs mmdet's PVT vs ResNet-50") == \
        'speed-and-memory-pvt_mm-vs-mmdets-pvt-vs-resnet-50'
