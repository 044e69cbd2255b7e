"""The package's shape: its layers, no import cycles, lean worker imports, the public API."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

import actors

pytestmark = pytest.mark.timeout(60)

ROOT = pathlib.Path(actors.__file__).parent


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in ROOT.rglob('*.py'):
        parts = list(path.relative_to(ROOT.parent).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts.pop()
        found['.'.join(parts)] = path
    return found


def _imports(path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    """Every actors module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f'{node.module}.{alias.name}' for alias in node.names]
        for name in names:
            if name in modules and name != 'actors':
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_no_module_imports_itself_back_through_others():
    graph = _graph()
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for nxt in sorted(graph.get(name, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, 'import cycles: ' + '; '.join(' -> '.join(c) for c in cycles)


def _reachable(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph.get(name, ()))
    return seen


@pytest.mark.parametrize(
    'module',
    [
        'actors.worker.interrupt',
        'actors.worker.supervise',
        'actors.worker.run',
        'actors.tools.mpi_tools',
        'actors.execution.watchdog',
    ],
)
def test_what_runs_in_workers_and_side_processes_imports_no_director_or_client(module: str):
    reached = _reachable(module, _graph())
    heavy = sorted(
        name
        for name in reached
        if name.startswith(('actors.director', 'actors.client', 'actors.cli', 'actors.store'))
    )
    assert not heavy, f'{module} imports {heavy}'


def test_a_worker_process_does_not_load_academy_or_the_director():
    code = (
        'import sys, actors.worker.interrupt, actors.worker.supervise; '
        'print(sorted(m for m in sys.modules if m.startswith(("academy", "actors.director", '
        '"actors.client"))))'
    )
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == '[]'


def test_the_public_api_comes_from_actors_alone():
    for name in actors.__all__:
        assert getattr(actors, name) is not None
    for required in (
        'Director',
        'CallResult',
        'DirectorStatus',
        'launch_directors',
        'wait_ready',
        'call',
        'simulated_nodes',
        'read_nodefile',
        'split_nodes',
        'write_partitions',
        'load_site',
        'Dispatcher',
        'ConfigurationError',
    ):
        assert required in actors.__all__
    with pytest.raises(AttributeError, match='no attribute'):
        _ = actors.not_a_name  # type: ignore[attr-defined]


LAYERS: tuple[tuple[str, ...], ...] = (
    ('common',),
    ('job',),
    ('tools',),
    ('worker',),
    ('execution', 'site'),
    ('store',),
    ('director',),
    ('calling',),
    ('coordinator',),
    ('client',),
    ('mcp',),
    ('cli',),
)
"""The packages from the bottom up: each may import only those of the layers below it.

``common`` is used everywhere; ``job`` says what a batch job and its nodes
are; ``tools`` are the simulations and ``worker`` runs them in Parsl's
workers; ``execution`` (Parsl's internals) and ``site`` (configs) make the
executors; ``store`` keeps journals and layouts; the ``director`` serves
calls, ``calling`` is the one way to call one, the ``coordinator`` moves
nodes between Directors; ``client``, ``mcp`` and ``cli`` are the ways in.
"""


def _package(module: str) -> str:
    return module.split('.')[1] if module.count('.') else ''


def test_every_package_has_a_layer():
    layered = {name for layer in LAYERS for name in layer}
    packages = {_package(m) for m in _modules()} - {''}
    assert packages == layered, (packages - layered, layered - packages)


def test_packages_import_only_the_layers_below_them():
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    upward = sorted(
        f'{module} -> {imported}'
        for module, imports in _graph().items()
        for imported in imports
        if _package(module)  # the top-level ``actors`` re-exports the public API
        and _package(imported) != _package(module)
        and rank[_package(imported)] >= rank[_package(module)]
    )
    assert not upward, 'imports against the layering: ' + '; '.join(upward)


def test_every_error_of_the_package_has_its_base():
    """One hierarchy: ``HpcToolCallingError`` and its families (``actors.common.errors``)."""
    import importlib
    import inspect
    import pkgutil

    from actors.common.errors import HpcToolCallingError

    # Not an error: the signal that unwinds a call stopped in its worker (a BaseException
    # so that a tool's ``except Exception`` cannot swallow it).
    not_errors = {'actors.worker.interrupt.CallStopped'}
    outside = []
    for info in pkgutil.walk_packages(actors.__path__, 'actors.'):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and f'{info.name}.{name}' not in not_errors
                and not issubclass(value, HpcToolCallingError)
            ):
                outside.append(f'{info.name}.{name}')
    assert not outside, outside


def test_tests_are_grouped_by_package():
    """``tests/<package>/`` per package of ``actors/``, plus the cluster and the design's guards."""
    tests = ROOT.parent / 'tests'
    packages = {p.name for p in ROOT.iterdir() if (p / '__init__.py').exists()}
    allowed = packages | {'cluster', 'project'}
    stray = sorted(str(p.relative_to(tests)) for p in tests.glob('test_*.py'))
    assert not stray, f'test files outside a package folder: {stray}'
    folders = {p.parent.name for p in tests.glob('*/test_*.py')}
    assert folders <= allowed, sorted(folders - allowed)
    assert all((tests / folder / '__init__.py').exists() for folder in folders)
