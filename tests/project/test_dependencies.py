"""Every package the code imports is installed by ``pip install .`` alone (no extras)."""

from __future__ import annotations

import ast
import importlib.metadata
import pathlib
import re
import sys
import tomllib

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(60)

# Imported only inside functions that say which extra to install when it is missing.
OPTIONAL = {'globus_compute_endpoint'}


def _name(requirement: str) -> str:
    return re.split(r'[\s<>=!~;\[(]', requirement, maxsplit=1)[0].lower().replace('_', '-')


def _installed_by(requirements: list[str]) -> set[str]:
    """The distributions these requirements install, transitively (extras' deps left out)."""
    seen: set[str] = set()
    todo = [_name(r) for r in requirements]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if 'extra ==' not in r]
    return seen


def _top_level_imports(path: pathlib.Path) -> set[str]:
    """Modules a file imports at module level (not inside functions)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return names


def test_module_level_imports_come_with_the_base_install():
    project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
    installed = _installed_by(project['dependencies'])
    providers = importlib.metadata.packages_distributions()
    files = [REPO / 'launch.py', *sorted((REPO / 'actors').rglob('*.py'))]
    missing = {}
    for path in files:
        for module in _top_level_imports(path) - set(sys.stdlib_module_names) - {'actors'}:
            dists = {d.lower().replace('_', '-') for d in providers.get(module, [])}
            if module not in OPTIONAL and not dists & installed:
                missing[f'{path.relative_to(REPO)}: import {module}'] = sorted(dists)
    assert not missing, f'`pip install .` does not install (add to dependencies): {missing}'
