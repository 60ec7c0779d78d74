"""The torch floor that setup.py declares is the one the code needs.

Every torch API newer than torch 2.0 that the package or its tools use is listed with the
release that added it (from torch's release notes); the sources are read with ``ast`` (import
aliases resolved) and no use may need more than the ``torch>=`` of ``install_requires``.
"""
import ast
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from .conftest import REPO

Version = Tuple[int, int]

#: torch API -> the release that added it. Keys with a suffix in parentheses are a form of
#: the call that is newer than the name itself.
MIN_TORCH: Dict[str, Version] = {
    'torch.compile': (2, 0),
    'torch.nn.functional.scaled_dot_product_attention': (2, 0),
    'torch.compiler.assume_constant_result': (2, 1),
    'torch.compiler.is_compiling': (2, 3),
    'torch.serialization.add_safe_globals': (2, 4),
    'torch.serialization.get_safe_globals': (2, 4),
    'torch.get_autocast_dtype': (2, 4),
    'torch.is_autocast_enabled (with a device type)': (2, 4),
    'torch.serialization.safe_globals': (2, 5),
    "torch.serialization.add_safe_globals ((callable, 'module.name') entries)": (2, 6),
}
MIN_ENTRY_TUPLES = "torch.serialization.add_safe_globals ((callable, 'module.name') entries)"
SAFE_GLOBALS_CALLS = ('torch.serialization.add_safe_globals', 'torch.serialization.safe_globals')


def declared_torch_floor() -> Version:
    """The ``torch>=X.Y`` entry of setup.py's ``INSTALL_REQUIRES``."""
    tree = ast.parse((REPO / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == 'INSTALL_REQUIRES' for t in node.targets):
            for req in ast.literal_eval(node.value):
                match = re.fullmatch(r'torch\s*>=\s*(\d+)\.(\d+)(\.\d+)?', req)
                if match:
                    return int(match[1]), int(match[2])
    raise AssertionError("setup.py's INSTALL_REQUIRES has no 'torch>=X.Y' entry")


def _aliases(tree: ast.Module) -> Dict[str, str]:
    """Local name -> dotted torch path, from the module's imports (at any depth)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split('.')[0] == 'torch':
                    names[alias.asname or 'torch'] = alias.name if alias.asname else 'torch'
        elif isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] == 'torch':
            for alias in node.names:
                names[alias.asname or alias.name] = f'{node.module}.{alias.name}'
    return names


def _dotted(node: ast.AST, aliases: Dict[str, str]) -> Optional[str]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return '.'.join([aliases[node.id], *reversed(parts)])


def api_uses(source: str) -> List[str]:
    """The :data:`MIN_TORCH` keys that ``source`` uses."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.Name)):  # calls, decorators, references
            name = _dotted(node, aliases)
            if name in MIN_TORCH:
                found.append(name)
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        if name == 'torch.is_autocast_enabled' and (node.args or node.keywords):
            found.append('torch.is_autocast_enabled (with a device type)')
        if name in SAFE_GLOBALS_CALLS and node.args and isinstance(node.args[0], ast.List) \
                and any(isinstance(e, ast.Tuple) for e in node.args[0].elts):
            found.append(MIN_ENTRY_TUPLES)
    return found


def code_uses() -> Dict[str, List[str]]:
    """API -> the files (package, tools) that use it."""
    uses: Dict[str, List[str]] = {}
    for folder in ('pvt_mm', 'tools'):
        for path in sorted((REPO / folder).rglob('*.py')):
            if '.mim' in path.parts:  # links to tools/ (editable installs)
                continue
            for name in api_uses(path.read_text()):
                uses.setdefault(name, []).append(str(path.relative_to(REPO)))
    # The allow-list is built by a function: what it returns is what the calls pass.
    from pvt_mm.checkpoint import mmengine_safe_globals
    if any(isinstance(g, tuple) for g in mmengine_safe_globals()):
        uses.setdefault(MIN_ENTRY_TUPLES, []).append('pvt_mm/checkpoint.py (mmengine_safe_globals)')
    return uses


def test_no_torch_api_newer_than_the_declared_floor():
    floor = declared_torch_floor()
    uses = code_uses()
    assert uses, 'the scan found no torch API of the table: is it reading the sources?'
    too_new = {f'{name} (torch {".".join(map(str, MIN_TORCH[name]))}): {files}'
               for name, files in uses.items() if MIN_TORCH[name] > floor}
    assert not too_new, (f'setup.py declares torch>={floor[0]}.{floor[1]}, but the code uses\n'
                         + '\n'.join(sorted(too_new))
                         + '\nRaise the floor in setup.py (and the README) or avoid these APIs.')


def test_the_scan_sees_aliases_decorators_and_call_forms():
    source = '\n'.join([
        'import torch', 'import torch.nn.functional as F',
        'from torch.serialization import safe_globals as sg',
        '@torch.compiler.assume_constant_result', 'def f(): pass',
        'F.scaled_dot_product_attention(q, k, v)', 'torch.is_autocast_enabled()',
        "torch.is_autocast_enabled('cuda')", 'sg([A])',
        "torch.serialization.add_safe_globals([A, (f, 'builtins.getattr')])"])
    assert sorted(api_uses(source)) == sorted([
        'torch.compiler.assume_constant_result',
        'torch.nn.functional.scaled_dot_product_attention',
        'torch.is_autocast_enabled (with a device type)', 'torch.serialization.safe_globals',
        'torch.serialization.add_safe_globals', MIN_ENTRY_TUPLES])


def test_every_listed_api_exists_in_the_installed_torch():
    for name in MIN_TORCH:
        obj = torch
        for part in name.split(' ')[0].split('.')[1:]:
            obj = getattr(obj, part)
