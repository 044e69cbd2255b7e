"""``launch.py tools`` and ``launch.py --campaign``."""

from __future__ import annotations

import json
import pathlib

import pytest

from tests.cli.test_cli import launch


@pytest.mark.timeout(60)
@pytest.mark.parametrize('fmt', ['openai', 'mcp'])
def test_tools_prints_the_schemas(fmt: str, tmp_path: pathlib.Path):
    proc = launch('tools', '--format', fmt, cwd=tmp_path, timeout=50)
    assert proc.returncode == 0, proc.stderr
    tools = json.loads(proc.stdout)
    assert isinstance(tools, list)
    names = [t['function']['name'] if fmt == 'openai' else t['name'] for t in tools]
    assert {'ase_md', 'ase_md_mpi', 'mock_md', 'mpi_probe', 'md_sim', 'status'} <= set(names)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ('args', 'message'),
    [
        (['tools', '--format', 'xml'], "invalid choice: 'xml'"),
        (['--campaign', '--tool', 'ase_md_mpi'], '--tool ase_md_mpi is an MPI tool'),
        (['--campaign', '--tool', 'nope'], "unknown tool 'nope'"),
        (['--campaign', '--steps', '-3'], '--steps -3: bad arguments'),
        (['--campaign', '--rounds', '-1'], '--rounds -1 is negative'),
    ],
)
def test_bad_tool_flags_exit_2(args, message, tmp_path: pathlib.Path):
    proc = launch(*args, cwd=tmp_path, timeout=50)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.timeout(240)
def test_campaign_json_holds_every_call(tmp_path: pathlib.Path):
    proc = launch(
        '--campaign',
        '--json',
        '--simulate-nodes',
        '2',
        '--rounds',
        '1',
        '--steps',
        '20',
        '--run-dir',
        str(tmp_path / 'run'),
        cwd=tmp_path,
        timeout=220,
    )
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    results = document['results']
    campaign = document['campaign']
    # 4 grid temperatures, then 2 refinements.
    assert len(results) == len(campaign['tool_calls']) == 6
    assert all(r['ok'] and r['tool'] == 'ase_md' for r in results)
    assert [len(r['temperatures']) for r in campaign['rounds']] == [4, 2]
    assert len(campaign['points']) == 6
