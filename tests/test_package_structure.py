"""The package's import graph: no circle (function-level imports included), and generic
checkpoint IO that knows no model."""
import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / 'pvt_mm'


def _module_name(package: Path, path: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _is_module(package: Path, name: str) -> bool:
    base = package.joinpath(*name.split('.')[1:])
    return base.with_suffix('.py').is_file() or (base / '__init__.py').is_file()


def import_graph(package: Path = PACKAGE) -> Dict[str, Set[str]]:
    """Edges ``module -> pvt_mm module it imports``, from every ``import`` statement at any
    depth (module level, inside functions and classes), relative imports resolved. A
    ``from X import name`` counts as importing ``X.name`` when that is a module, else ``X``.

    Args:
        package: The package folder to read.
    """
    graph: Dict[str, Set[str]] = {}
    root = package.name
    for path in sorted(package.rglob('*.py')):
        name = _module_name(package, path)
        is_package = path.name == '__init__.py'
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = name.split('.')
                    anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                    source = '.'.join(anchor + ([node.module] if node.module else []))
                else:
                    source = node.module or ''
                targets = [f'{source}.{alias.name}'
                           if _is_module(package, f'{source}.{alias.name}') else source
                           for alias in node.names]
            else:
                continue
            edges.update(t for t in targets if t == root or t.startswith(root + '.'))
        edges.discard(name)
    return graph


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _reachable(graph: Dict[str, Set[str]], start: str) -> Set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_import_graph_is_read():
    graph = import_graph()
    assert 'pvt_mm.models.backbones.pvt' in graph['pvt_mm.models.backbones']
    assert 'pvt_mm.checkpoint' in graph['pvt_mm.models.backbones.pvt_convert']


def test_no_import_cycle_in_the_package():
    cycles = find_cycles(import_graph())
    assert not cycles, f'import cycles (function-level imports count): {cycles}'


def test_checkpoint_io_imports_no_model():
    reached = _reachable(import_graph(), 'pvt_mm.checkpoint')
    assert not {m for m in reached if m.startswith('pvt_mm.models')}, reached


def test_a_cycle_is_found(tmp_path):
    """The checker sees a circle hidden in a function, as checkpoint <-> pvt once was."""
    package = tmp_path / 'pvt_mm'
    package.mkdir()
    (package / '__init__.py').write_text('')
    (package / 'a.py').write_text('from .b import f\n')
    (package / 'b.py').write_text('def f():\n    from . import a\n')
    assert find_cycles(import_graph(package)) == [['pvt_mm.a', 'pvt_mm.b']]


def test_every_module_states_its_job_in_the_generated_layout():
    """docs/get_started.md's layout is each module's own docstring (one place per fact): every
    module of the package has a row, and every row a stated job."""
    from pvt_mm import doc_blocks
    table = doc_blocks.layout_table()
    rows = dict(line.split(' | ', 1) for line in table.splitlines()[2:])
    modules = [p for p in PACKAGE.rglob('*.py') if p.name != 'version.py']
    assert len(rows) == len(modules)
    empty = [name for name, job in rows.items() if job.strip(' |') == '']
    assert empty == [], f'modules without an opening docstring: {empty}'
