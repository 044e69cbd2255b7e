"""``launch.py mcp``'s large outputs and results, against collisions, planted links and NaN.

Outputs by reference cannot collide (an ensemble ``E`` and a call keyed
``E-results`` get their own files), and nothing under ``<run_dir>/mcp/outputs``
is followed through a symbolic link, for reading or for writing. A result
holding NaN or infinities says so, instead of ``null``.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import McpError

from tests.mcp_servers import SMALL_JOB
from tests.mcp_servers import stdio_session

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings('ignore:The experimental tasks API is deprecated'),
]


def _strict(text: str) -> Any:
    """``text`` as JSON, refusing NaN and Infinity (what strict readers do)."""

    def refuse(name: str) -> None:
        raise ValueError(f'{name} in {text[:200]}')

    return json.loads(text, parse_constant=refuse)


def test_an_ensemble_and_a_call_keyed_like_its_results_or_calls_do_not_collide(
    run_dir: pathlib.Path,
) -> None:
    async def main() -> None:
        args = (*SMALL_JOB, '--run-dir', str(run_dir), '--inline-limit', '10')
        with open(run_dir.parent / 'stdio.err', 'w') as errlog:
            async with stdio_session(*args, errlog=errlog) as session:
                sets = [{'duration': 0, 'seed': 1}, {'duration': 0, 'seed': 2}]
                ensemble = await session.call_tool(
                    'ensemble', {'tool': 'mock_md', 'arguments': sets, 'call_key': 'E'}
                )
                single = await session.call_tool(
                    'mock_md', {'duration': 0, 'seed': 3, 'call_key': 'E-results'}
                )
                assert not ensemble.isError and not single.isError
                ensemble_uri = ensemble.structuredContent['results_ref']['uri']
                single_uri = single.structuredContent['value_ref']['uri']
                assert ensemble_uri != single_uri
                # Each reference serves its own call's data, whichever was written last.
                results = _strict((await session.read_resource(ensemble_uri)).contents[0].text)
                assert [r['params']['seed'] for r in results] == [1, 2]
                value = _strict((await session.read_resource(single_uri)).contents[0].text)
                assert value['steps'] == 1000 and set(value) == {'steps', 'temperature', 'energy'}
                listed = {str(r.uri) for r in (await session.list_resources()).resources}
                assert {ensemble_uri, single_uri} <= listed

                # Nor do keys: call 0 of ensemble E is keyed E/0, and the Directors answer
                # a key from their journals (a call keyed E/0 got E's call 0, seed 1).
                member = await session.call_tool('mock_md', {'seed': 9, 'call_key': 'E/0'})
                assert member.isError
                assert "call 0 of ensemble 'E'" in member.content[0].text
                await session.call_tool('mock_md', {'duration': 0, 'call_key': 'F/1'})
                owner = await session.call_tool(
                    'ensemble', {'tool': 'mock_md', 'arguments': sets, 'call_key': 'F'}
                )
                assert owner.isError
                assert "calls keyed 'F'/<i> exist" in owner.content[0].text

    anyio.run(main)


def test_links_planted_in_the_outputs_folder_are_never_followed(
    run_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """A symlinked folder is refused with a clear error; a symlinked file is neither read
    nor written through; nothing outside the run dir is touched."""
    outside = tmp_path / 'outside'
    outside.mkdir()
    secret = outside / 'secret.json'
    secret.write_text('{"secret": "do not serve"}')
    victim = outside / 'victim.json'
    victim.write_text('untouched')
    outside_mode = outside.stat().st_mode
    mcp_dir = run_dir / 'mcp'
    mcp_dir.mkdir()
    folder = mcp_dir / 'outputs'
    folder.symlink_to(outside, target_is_directory=True)

    def before() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in outside.iterdir()}

    untouched = before()

    async def main() -> None:
        args = (*SMALL_JOB, '--run-dir', str(run_dir), '--inline-limit', '10')
        with open(run_dir.parent / 'stdio.err', 'w') as errlog:
            async with stdio_session(*args, errlog=errlog) as session:
                # The folder is a link: a large value is not written through it.
                refused = await session.call_tool('mock_md', {'duration': 0, 'call_key': 'a'})
                assert refused.isError
                text = refused.content[0].text
                assert 'symbolic link' in text and str(folder) in text, text
                with pytest.raises(McpError, match='symbolic link'):
                    await session.read_resource('hpc://outputs/secret.json')
                listed = {str(r.uri) for r in (await session.list_resources()).resources}
                assert listed == {'hpc://status'}

                # A real folder, with links planted under the next output's name and another.
                from actors.mcp.outputs import TOOL_VALUE
                from actors.mcp.outputs import file_name_of

                folder.unlink()
                folder.mkdir(mode=0o700)
                planted = folder / file_name_of(TOOL_VALUE, 'b')
                planted.symlink_to(victim)
                (folder / 'value-secret.json').symlink_to(secret)
                written = await session.call_tool('mock_md', {'duration': 0, 'call_key': 'b'})
                assert not written.isError, written.content
                uri = written.structuredContent['value_ref']['uri']
                assert uri.endswith(planted.name)
                assert not planted.is_symlink()  # the link itself was replaced, not its target
                value = _strict((await session.read_resource(uri)).contents[0].text)
                assert set(value) == {'steps', 'temperature', 'energy'}
                with pytest.raises(McpError, match='symbolic link'):
                    await session.read_resource('hpc://outputs/value-secret.json')
                listed = {str(r.uri) for r in (await session.list_resources()).resources}
                assert 'hpc://outputs/value-secret.json' not in listed

    anyio.run(main)
    assert before() == untouched
    assert outside.stat().st_mode == outside_mode  # not even chmod-ed through the link
    assert not [p for p in folder.iterdir() if p.name.endswith('.part')]


def _nan_journal(run_dir: pathlib.Path, key: str) -> None:
    """Make the journaled result of ``key`` hold NaN and infinities, as a tool's could.

    The journal's JSON fallback (a result with an integer beyond 64 bits) writes
    them as ``NaN``/``Infinity`` literals, which it reads back as floats.
    """
    for path in (run_dir / 'journal').glob('*.jsonl'):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            record = json.loads(line)
            if record.get('call_key') == key:
                record['value'] = {
                    'energy': math.nan,
                    'forces': [math.inf, -math.inf, 1.5],
                    'label': 'NaN',
                    'big': 2**70,
                }
                lines[i] = json.dumps(record)
        path.write_text('\n'.join(lines) + '\n')
    # The book must answer from the journal: forget that it saw the call end.
    book = run_dir / 'mcp' / 'calls.jsonl'
    kept = [
        line
        for line in book.read_text().splitlines()
        if not (json.loads(line)['event'] == 'end' and json.loads(line)['key'] == key)
    ]
    book.write_text('\n'.join(kept) + '\n')


def test_a_result_with_nan_says_so_instead_of_null(run_dir: pathlib.Path) -> None:
    errlog = open(run_dir.parent / 'stdio.err', 'w')  # two sessions write it

    async def first() -> None:
        args = (*SMALL_JOB, '--run-dir', str(run_dir))
        async with stdio_session(*args, errlog=errlog) as session:
            done = await session.call_tool('mock_md', {'duration': 0, 'call_key': 'nan'})
            assert not done.isError

    async def resumed() -> None:
        async with stdio_session('--resume', str(run_dir), errlog=errlog) as session:
            fetched = await session.call_tool('call_result', {'call_key': 'nan', 'wait': 60})
            assert not fetched.isError, fetched.content
            result = fetched.structuredContent['result']
            assert result['value'] == {
                'energy': 'NaN',
                'forces': ['Infinity', '-Infinity', 1.5],
                'label': 'NaN',
                'big': 2**70,
            }
            # What was replaced, by JSON Pointer: the tool's own string "NaN" is not listed.
            notes = '\n'.join(result['replaced'])
            assert '/value/energy: float NaN' in notes
            assert '/value/forces/0: float Infinity' in notes
            assert '/value/forces/1: float -Infinity' in notes
            assert '/value/label' not in notes
            # The text a model reads is strict JSON, and says the same.
            said = _strict(fetched.content[0].text)
            assert said['result']['replaced'] == result['replaced']

    try:
        anyio.run(first)
        _nan_journal(run_dir, 'nan')
        anyio.run(resumed)
    finally:
        errlog.close()
    assert os.path.exists(run_dir / 'mcp' / 'calls.jsonl')
    for line in (run_dir / 'mcp' / 'calls.jsonl').read_text().splitlines():
        _strict(line)  # the book holds no NaN either
