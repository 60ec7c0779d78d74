"""The generated blocks of the README and docs pages: written from the code, and checked.

Two sources, each fact kept in one place: the arch table
(:data:`pvt_mm.models.backbones.archs.ARCH_TABLE`: fields, published counts, official weights)
and each module's opening docstring (the package layout). Measured figures stay
hand-written. A page opts in with a pair of markers around a block, e.g.::

    <!-- generated:presets:begin -->
    (generated: do not edit)
    <!-- generated:presets:end -->

``python tools/misc/gen_docs.py`` rewrites every block; ``--check`` rewrites nothing
and exits 1 naming each page whose blocks differ from the table (the suite runs it).
"""
import argparse
import ast
import re
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .models.backbones import archs

MARKER = re.compile(r'(<!-- generated:(?P<name>[\w-]+):begin -->\n)(?P<body>.*?)'
                    r'(<!-- generated:(?P=name):end -->)', re.S)


def _nums(values: Sequence) -> str:
    return ', '.join(str(v) for v in values)


def _published(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.1f}'


def presets_table() -> str:
    """Every preset: its type, stage layout, published counts and official weights."""
    lines = ['| arch | `type` | depths | embed dims | heads | SR ratios | MLP ratios | '
             'published params (M) | published GFLOPs (224x224) | official weights |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for row in archs.rows():
        f = row.fields
        weights = '-' if row.weights_url is None else f'[{row.weights_file}]({row.weights_url})'
        lines.append(f'| {row.name} | `{row.backbone_type}` | {_nums(f["depths"])} | '
                     f'{_nums(f["embed_dims"])} | {_nums(f["num_heads"])} | '
                     f'{_nums(f["sr_ratios"])} | {_nums(f["mlp_ratios"])} | '
                     f'{_published(row.params_m)} | {_published(row.gflops)} | {weights} |')
    return '\n'.join(lines) + '\n'


def readme_presets_table() -> str:
    """One line per backbone type: its presets with their published parameter counts."""
    lines = ['| `type` | presets (published parameters of the ImageNet classifier, M) |',
             '|---|---|']
    for version, backbone_type in archs.BACKBONE_TYPES.items():
        presets = ', '.join(f'{row.name} ({_published(row.params_m)})'
                            for row in archs.rows(version))
        lines.append(f'| `{backbone_type}` | {presets} |')
    return '\n'.join(lines) + '\n'


def v2_archs_table() -> str:
    """PVT v2's presets: depths, widths and MLP ratios."""
    lines = ['| arch | depths | embed dims | MLP ratios |', '|---|---|---|---|']
    for row in archs.rows('v2'):
        f = row.fields
        lines.append(f'| {row.name} | {_nums(f["depths"])} | {_nums(f["embed_dims"])} | '
                     f'{_nums(f["mlp_ratios"])} |')
    return '\n'.join(lines) + '\n'


def configs_table() -> str:
    """Every preset's configs (one column per family; '-' where it has none)."""
    families = archs.ALL_FAMILIES
    lines = ['| arch | ' + ' | '.join(families) + ' | weights path in configs |',
             '|---|' + '---|' * (len(families) + 1)]
    for row in archs.rows():
        cells = [f'`{row.config_file(family)}`' if family in row.families else '-'
                 for family in families]
        path = '-' if row.checkpoint_path is None else f'`{row.checkpoint_path}`'
        lines.append(f'| {row.name} | ' + ' | '.join(cells) + f' | {path} |')
    return '\n'.join(lines) + '\n'


PACKAGE = Path(__file__).resolve().parent

_ROLE = re.compile(r':(?:mod|func|class|data|meth|attr):`~?\.?([^`]+)`')


def _job(path: Path) -> str:
    """The first sentence of a module's opening docstring: the one job it states."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ''
    text = ' '.join(doc.split('\n\n')[0].split())
    text = _ROLE.sub(r'`\1`', text).replace('``', '`')
    match = re.match(r'(.+?\.)(\s|$)', text)
    return (match.group(1) if match else text).rstrip('.')


def layout_table() -> str:
    """Every module of the package and its one job, from its opening docstring."""
    lines = ['| module | its job (from its docstring) |', '|---|---|']
    for path in sorted(PACKAGE.rglob('*.py'), key=lambda p: (p.parent != PACKAGE, str(p))):
        if path.name == 'version.py':
            continue
        rel = path.relative_to(PACKAGE.parent).as_posix()
        if path.name == '__init__.py':
            rel = rel[:-len('__init__.py')]
        lines.append(f'| `{rel}` | {_job(path)} |')
    return '\n'.join(lines) + '\n'


#: The blocks a page may hold, by marker name.
BLOCKS: Dict[str, Callable[[], str]] = {
    'presets': presets_table,
    'readme-presets': readme_presets_table,
    'v2-archs': v2_archs_table,
    'configs': configs_table,
    'layout': layout_table,
}


def render_page(text: str) -> str:
    """``text`` with every marked block replaced by its generated table.

    Raises:
        KeyError: a marker names no block of :data:`BLOCKS`.
    """
    def fill(match: 're.Match') -> str:
        name = match.group('name')
        if name not in BLOCKS:
            raise KeyError(f'unknown generated block {name!r}; known: {sorted(BLOCKS)}')
        return match.group(1) + BLOCKS[name]() + match.group(4)
    return MARKER.sub(fill, text)


def pages(root: Path) -> List[Path]:
    """The markdown pages that may hold blocks: the README and ``docs/*.md``."""
    return [root / 'README.md'] + sorted((root / 'docs').glob('*.md'))


def sync(root: Path, check: bool = False) -> List[Path]:
    """Regenerate the blocks of every page under ``root``.

    Args:
        root: The repository root.
        check: Write nothing; only report.

    Returns:
        The pages whose blocks differed from the table (rewritten unless ``check``).
    """
    drifted = []
    for page in pages(root):
        if not page.is_file():
            continue
        text = page.read_text()
        new = render_page(text)
        if new != text:
            drifted.append(page)
            if not check:
                page.write_text(new)
    return drifted


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/misc/gen_docs.py``."""
    parser = argparse.ArgumentParser(description='Write (or --check) the generated blocks of '
                                     'the README and docs pages (arch tables, package layout).')
    parser.add_argument('--check', action='store_true',
                        help='write nothing; exit 1 naming each page that differs')
    parser.add_argument('--root', type=Path, default=Path('.'), help='repository root')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``tools/misc/gen_docs.py``'s command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    drifted = sync(args.root, check=args.check)
    for page in drifted:
        verb = 'differs from the code (arch table / module docstrings)' if args.check else 'rewritten'
        print(f'{page}: {verb}', file=sys.stderr if args.check else sys.stdout)
    if args.check and drifted:
        print('run: python tools/misc/gen_docs.py', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
