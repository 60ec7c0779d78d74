"""A fast lint that agrees with the real runs on the oldest stack (tests marked ``compat``,
run there by tools/run_tests.sh): torch APIs newer than setup.py's ``torch>=`` floor are
used only where a capability decides -- :mod:`pvt_mm.capabilities`, and the deployment code
that its ``ONNX_EXPORT`` gate keeps from ever importing on an older torch.

Every such API is listed with the release that added it (from torch's release notes); the
sources are read with ``ast`` (import aliases resolved).
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
    'torch.compiler.is_exporting': (2, 7),
    'torch.library.custom_op': (2, 4),
    'torch.library.get_ctx': (2, 4),
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


#: Where APIs newer than the floor may appear: the capability module, and the code behind
#: the ONNX_EXPORT gate (pvt_mm/deploy refuses to import on an older torch).
GATED = ('pvt_mm/capabilities.py', 'pvt_mm/deploy/', 'tools/deployment/')


def code_uses() -> Dict[str, List[str]]:
    """API -> the files (package, tools) that use it."""
    uses: Dict[str, List[str]] = {}
    for folder in ('pvt_mm', 'tools'):
        for path in sorted((REPO / folder).rglob('*.py')):
            if '.mim' in path.parts:  # links to tools/ (editable installs)
                continue
            for name in api_uses(path.read_text()):
                uses.setdefault(name, []).append(str(path.relative_to(REPO)))
    return uses


def test_apis_newer_than_the_floor_only_behind_a_capability():
    floor = declared_torch_floor()
    uses = code_uses()
    assert uses, 'the scan found no torch API of the table: is it reading the sources?'
    assert any(f == 'pvt_mm/capabilities.py' for files in uses.values() for f in files)
    too_new = {f'{name} (torch {".".join(map(str, MIN_TORCH[name]))}): {ungated}'
               for name, files in uses.items() if MIN_TORCH[name] > floor
               for ungated in [[f for f in files if not f.startswith(GATED)]] if ungated}
    assert not too_new, (f'setup.py declares torch>={floor[0]}.{floor[1]}, but these files use\n'
                         + '\n'.join(sorted(too_new)) + '\nAsk pvt_mm.capabilities instead '
                         '(add the capability there), or raise the floor in setup.py and the docs.')


def test_the_floor_is_the_oldest_tested_stack():
    """setup.py's floor is the torch that tools/setup_env.sh's oldest stack installs."""
    setup_env = (REPO / 'tools' / 'setup_env.sh').read_text()
    oldest = re.search(r'oldest\)\s+VENV=.*?\s+TORCH_VERSION=(\d+)\.(\d+)', setup_env, re.S)
    assert oldest, 'tools/setup_env.sh has no oldest stack'
    assert declared_torch_floor() == (int(oldest[1]), int(oldest[2]))


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
