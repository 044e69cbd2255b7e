"""The client side loads no Parsl, and every entry point checks calls against one set of limits."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from actors.common import limits
from actors.common.errors import ConfigurationError
from actors.director import checks
from actors.director.actions import CallActions
from actors.mcp import server
from actors.mcp import shapes

LIGHT = (
    'actors.mcp.server',
    'actors.calling.calls',
    'actors.client.dispatcher',
    'actors.director.specs',
    'actors.store',
    'actors.store.journal',
    'actors.store.manifest',
    'actors.store.moves',
    'actors.store.run_dirs',
    'actors.store.run_lock',
    'actors.coordinator.agent',
)
"""Modules a client (the MCP server, ``launch.py tools``) or the coordinator imports."""

CALL_PATH_LIMIT = 40
"""Most ``actors`` modules the call path may load (12 when it was split from launching)."""


def _chain(importtime: str, prefix: str) -> list[str]:
    """The first module named ``prefix...`` and the modules that imported it, from importtime.

    ``-X importtime`` lists a module after those it imported, indented one
    level deeper than the module that imported it.
    """
    entries = []
    for line in importtime.splitlines():
        if line.startswith('import time:') and line.count('|') == 2:
            name = line.split('|')[2]
            entries.append((len(name) - len(name.lstrip()), name.strip()))
    for i, (depth, name) in enumerate(entries):
        if name.startswith(prefix):
            chain, level = [name], depth
            for outer, parent in entries[i + 1 :]:
                if outer < level:
                    chain.append(parent)
                    level = outer
            return chain
    return []


@pytest.mark.timeout(120)
def test_the_mcp_server_dispatcher_store_and_coordinator_load_no_parsl():
    code = (
        f'import sys, {", ".join(LIGHT)}; '
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'parsl')))"
    )
    done = subprocess.run(
        [sys.executable, '-X', 'importtime', '-c', code],
        capture_output=True,
        text=True,
        check=True,
        timeout=100,
    )
    loaded = done.stdout.split()
    assert not loaded, (
        f'{len(loaded)} parsl modules loaded ({", ".join(loaded[:5])}, ...); pulled in by: '
        + ' <- '.join(_chain(done.stderr, 'parsl'))
    )


@pytest.mark.timeout(30)
def test_the_mcp_schemas_carry_the_limits_the_directors_check():
    control = shapes.CONTROL
    assert control['call_key']['maxLength'] == limits.MAX_KEY_LENGTH
    assert control['timeout']['maximum'] == limits.MAX_TIMEOUT
    assert control['timeout']['exclusiveMinimum'] == 0
    tools = {tool.name: tool for tool in shapes.list_tools()}
    assert tools['mock_md'].inputSchema['properties']['call_key'] == control['call_key']
    ensemble_key = tools[shapes.ENSEMBLE].inputSchema['properties']['call_key']
    assert ensemble_key['maxLength'] == shapes.ENSEMBLE_KEY_LENGTH
    # The last call of the largest ensemble is keyed '<call_key>/<i>': the Directors take it.
    longest = 'k' * shapes.ENSEMBLE_KEY_LENGTH
    checks.batch_keys(1, [f'{longest}/{shapes.MAX_ENSEMBLE - 1}'], None)


def _refusal(check, *args, **kwargs) -> str:
    with pytest.raises(ConfigurationError) as info:
        check(*args, **kwargs)
    message = str(info.value)
    assert '\n' not in message
    return message


@pytest.mark.timeout(30)
def test_the_mcp_server_and_the_director_accept_and_refuse_the_same_calls():
    longest, too_long = 'k' * limits.MAX_KEY_LENGTH, 'k' * (limits.MAX_KEY_LENGTH + 1)
    at_most = f'at most {limits.MAX_KEY_LENGTH} characters'
    # At the bounds both accept.
    assert server._control('mock_md', {'call_key': longest, 'timeout': limits.MAX_TIMEOUT}) == {
        'call_key': longest,
        'timeout': limits.MAX_TIMEOUT,
    }
    assert checks.batch_keys(1, [longest], None) == [longest]
    # Past them both refuse, in one line naming the value and what is valid.
    said = _refusal(server._control, 'mock_md', {'call_key': too_long})
    assert said.startswith('mock_md: call_key') and at_most in said and "got 'kkk" in said
    said = _refusal(checks.batch_keys, 1, [too_long], None)
    assert at_most in said and f'({limits.MAX_KEY_LENGTH + 1} characters)' in said
    for bad in (0, -1, limits.MAX_TIMEOUT * 2, float('nan'), True, 'soon'):
        said = _refusal(server._control, 'mock_md', {'timeout': bad})
        assert said.startswith('mock_md: timeout') and f'got {bad!r}' in said
        assert f'at most {limits.MAX_TIMEOUT:.0f}' in said
    said = _refusal(server._control, shapes.ENSEMBLE, {'call_key': longest})
    assert f'at most {shapes.ENSEMBLE_KEY_LENGTH} characters' in said


@pytest.mark.timeout(30)
def test_the_director_actions_refuse_past_the_limits_before_anything_runs():
    # The actions' own code, without a Director: each refusal comes before the runner is needed.
    actions = CallActions()
    actions.runner = None
    too_long = 'k' * (limits.MAX_KEY_LENGTH + 1)
    key_says = f'at most {limits.MAX_KEY_LENGTH} characters'
    for call, says in [
        (actions.md_sim(timeout=limits.MAX_TIMEOUT * 2), f'at most {limits.MAX_TIMEOUT:.0f}'),
        (actions.call_tool('mock_md', {}, timeout=0), 'got 0'),
        (actions.md_sim(call_key=too_long), key_says),
        (actions.md_sim_batch(1, batch_key=too_long), key_says),
    ]:
        assert says in _refusal(asyncio.run, call)


@pytest.mark.timeout(120)
def test_the_call_path_loads_neither_parsl_nor_the_director():
    code = (
        'import sys, actors.calling.calls, actors.client.dispatcher; '
        "ours = sorted(m for m in sys.modules if m.split('.')[0] == 'actors'); "
        "parsl = [m for m in sys.modules if m.split('.')[0] == 'parsl']; "
        "print(len(parsl), len(ours), ' '.join(ours))"
    )
    done = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True, timeout=100
    )
    parsl, count, *ours = done.stdout.split()
    assert parsl == '0'
    # The Director class and launching stay out: mypy alone reads the Director's types.
    assert 'actors.director.agent' not in ours and 'actors.client.launch' not in ours
    assert 'actors.coordinator.agent' not in ours
    assert int(count) <= CALL_PATH_LIMIT, ours


@pytest.mark.timeout(120)
def test_the_action_names_clients_may_call_are_the_directors_actions():
    from academy.agent import Agent
    from academy.agent import _is_agent_method_type

    from actors.director.actions import ACTIONS
    from actors.director.agent import Director

    def actions(cls: type) -> set[str]:
        return {n for n in dir(cls) if _is_agent_method_type(getattr(cls, n, None), 'action')}

    # Academy's own (agent_describe) are not the Director's to declare.
    assert ACTIONS == actions(Director) - actions(Agent)


@pytest.mark.timeout(120)
def test_the_call_paths_answer_types_are_the_directors_actions_return_types():
    import typing

    from actors.calling import calls
    from actors.director.actions import ACTIONS
    from actors.director.agent import Director

    typed: dict[str, str] = {}
    for overload in typing.get_overloads(calls.call):
        # 'Literal[...]' as written: the names it covers, and the answer it promises.
        action = overload.__annotations__['action']
        if action.startswith('Literal['):
            for name in action.removeprefix('Literal[').removesuffix(']').split(','):
                typed[name.strip().strip("'")] = overload.__annotations__['return']
    assert set(typed) == ACTIONS
    for name, answer in typed.items():
        assert getattr(Director, name).__annotations__['return'] == answer, name
