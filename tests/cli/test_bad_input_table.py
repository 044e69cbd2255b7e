"""Bad input everywhere: a clear error naming the bad value, and Directors keep serving."""

from __future__ import annotations

import asyncio
import math
import pathlib
import threading

import pytest

from actors.calling.calls import call
from actors.cli.main import main
from actors.common.errors import ConfigurationError
from actors.director.agent import Director
from actors.job.partition import simulated_nodes
from actors.job.partition import split_nodes
from actors.job.walltime import Walltime
from actors.job.walltime import allocation_end
from actors.site.profile import load_site
from actors.store.manifest import RunManifest
from actors.tools.registry import check_params
from tests.helpers import running_directors

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def files(tmp_path: pathlib.Path) -> dict[str, str]:
    comments = tmp_path / 'blank.nodes'
    comments.write_text('\n\n')
    no_manifest = tmp_path / 'no-manifest'
    no_manifest.mkdir()
    broken = tmp_path / 'broken-run'
    broken.mkdir()
    (broken / 'manifest.json').write_text('{"run_dir": ')
    listed = tmp_path / 'list-run'
    listed.mkdir()
    (listed / 'manifest.json').write_text('[1, 2]')
    binary = tmp_path / 'binary-run'
    binary.mkdir()
    (binary / 'manifest.json').write_bytes(b'\xff\xfe\x00')
    typed = tmp_path / 'typed-run'
    typed.mkdir()
    (typed / 'manifest.json').write_text('{"run_dir": 5, "directors": []}')
    used = tmp_path / 'used-run'
    (used / 'journal').mkdir(parents=True)
    (used / 'journal' / 'director-0.jsonl').write_text('')
    a_file = tmp_path / 'a-file'
    a_file.write_text('x')
    return {
        'listed': str(listed),
        'binary': str(binary),
        'typed': str(typed),
        'used': str(used),
        'a_file': str(a_file),
        'blank': str(comments),
        'dir': str(tmp_path),
        'missing': str(tmp_path / 'nope.nodes'),
        'no_manifest': str(no_manifest),
        'broken': str(broken),
    }


DEEP: list = [1]
for _ in range(40):
    DEEP = [DEEP]

CLI_CASES = [
    (['--retries', '-1'], '--retries -1'),
    (['--retries', 'two'], "invalid int value: 'two'"),
    (['--restarts', '-2'], '--restarts -2'),
    (['--timeout', '0'], '--timeout 0.0'),
    (['--timeout', '-3'], '--timeout -3.0'),
    (['--timeout', 'inf'], '--timeout inf'),
    (['--timeout', '3e6'], 'at most 2592000'),
    (['--walltime', 'abc'], "walltime 'abc'"),
    (['--walltime', '0'], "walltime '0'"),
    (['--walltime', '1:2:3:4'], "walltime '1:2:3:4'"),
    (['--drain-margin', '-1'], 'drain margin -1.0'),
    (['--drain-margin', 'nan'], 'drain margin nan'),
    (['--journal-sync', 'always'], "invalid choice: 'always'"),
    (['--resume', '{missing}'], 'has no manifest.json'),
    (['--resume', '{no_manifest}'], 'has no manifest.json'),
    (['--resume', '{broken}'], 'cannot be read'),
    (['--nodes-file', '{blank}'], 'lists no host'),
    (['--nodes-file', '{missing}'], 'does not exist'),
    (['--nodes-file', '{dir}'], 'cannot be read'),
    (['--iterations', '-4'], '--iterations -4'),
    (['--iterations', '2000000'], '--iterations 2000000 is invalid; give 0 to 1000000'),
    (['--duration', '1e308'], '--duration 1e+308 is invalid'),
    (['--duration', 'nan'], '--duration nan is invalid'),
    (['--simulate-nodes', '100000'], '--simulate-nodes 100000 is invalid; a simulated job has 1'),
    (['--workers-per-node', '5000'], '--workers-per-node 5000 is invalid; give 1 to 1024'),
    (['--resume', '{listed}'], 'is not a manifest of launch.py'),
    (['--resume', '{binary}'], 'cannot be read'),
    (['--resume', '{typed}'], "'run_dir' must be a str"),
    (['--run-dir', '{used}'], 'already holds a run (journal); give --resume'),
    (['--run-dir', '{a_file}'], 'is a file; give a directory'),
    (['--exchange', 'carrier-pigeon'], "unknown exchange 'carrier-pigeon'"),
    (['--executor', 'process'], '--executor process runs Directors in other processes'),
]


@pytest.mark.parametrize(('argv', 'message'), CLI_CASES, ids=[' '.join(a) for a, _ in CLI_CASES])
def test_bad_cli_input_is_one_clear_line(
    argv: list[str],
    message: str,
    files: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: pathlib.Path,
):
    argv = [a.format(**files) for a in argv]
    with pytest.raises(SystemExit) as info:
        own_dir = '--resume' in argv or '--run-dir' in argv
        main(argv if own_dir else [*argv, '--run-dir', str(tmp_path / 'run')])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert message in err[0]
    assert 'Traceback' not in err[0]


@pytest.mark.parametrize(
    ('env', 'message'),
    [
        ({'SLURM_JOB_END_TIME': 'soon'}, "SLURM_JOB_END_TIME='soon'"),
        ({'PBS_WALLTIME': 'forever'}, "walltime 'forever'"),
    ],
)
def test_bad_scheduler_walltime_is_rejected(env: dict[str, str], message: str):
    with pytest.raises(ConfigurationError, match=message):
        allocation_end(None, env)


def test_bad_config_values_are_rejected(tmp_path: pathlib.Path):
    (part,) = split_nodes(simulated_nodes(1), count=1)
    profile = load_site('local')
    errors = []
    for bad in (-1, '2', True, 1.5):
        with pytest.raises(ConfigurationError) as info:
            Director(part, profile, str(tmp_path), retries=bad)
        errors.append(str(info.value))
    for margin in (-5.0, math.nan, math.inf):
        with pytest.raises(ConfigurationError, match='drain margin'):
            Walltime(end=1.0, margin=margin)
    with pytest.raises(ConfigurationError, match="unknown tool 'nope'"):
        check_params('nope', {})
    with pytest.raises(ConfigurationError, match=r'no manifest\.json'):
        RunManifest.read(tmp_path)
    assert all('retries must be an integer >= 0' in e for e in errors)


ACTION_CASES = [
    ('md_sim', {'timeout': 'soon'}, "got 'soon'"),
    ('md_sim', {'timeout': -1}, 'got -1'),
    ('md_sim', {'timeout': math.inf}, 'got inf'),
    ('md_sim', {'timeout': True}, 'got True'),
    ('md_sim', {'timeout': 3e6}, 'at most 2592000 (30 days)'),
    ('md_sim', {'call_key': 5}, 'got 5'),
    ('md_sim', {'call_key': ''}, "got ''"),
    ('md_sim', {'call_key': 'x' * 2000}, 'at most 1000'),
    ('md_sim', {'nonsense': 1}, 'nonsense'),
    ('md_sim_batch', {'iterations': 10**9}, 'between 0 and'),
    ('md_sim_batch', {'iterations': 2.5}, 'must be an integer'),
    ('md_sim_batch', {'iterations': 2, 'call_keys': ['a']}, '1 call_keys given for 2 calls'),
    ('md_sim_batch', {'iterations': 2, 'call_keys': ['a', 'a']}, 'unique'),
    ('md_sim_batch', {'iterations': 1, 'call_keys': 'a'}, 'list of strings'),
    ('md_sim_batch', {'iterations': 1, 'call_keys': ['a'], 'batch_key': 'b'}, 'not both'),
    ('md_sim_batch', {'iterations': 1, 'batch_key': 7}, 'got 7'),
    ('md_sim_batch', {'iterations': 1, 'timeout': 0}, 'got 0'),
    ('md_sim', {'duration': 'soon'}, "duration: 'soon' is not of type 'number'"),
    ('md_sim', {'tool': 'ase_md', 'size': 1.5}, "size: 1.5 is not of type 'integer'"),
    ('md_sim', {'temperature': math.nan}, 'temperature: nan is not a finite number'),
    ('md_sim', {'duration': math.inf}, 'duration: inf is not a finite number'),
    ('md_sim', {'duration': 1e308}, 'duration: 1e+308 is greater than the maximum'),
    ('md_sim', {'steps': -5}, 'steps: -5 is less than the minimum of 0'),
    ('md_sim', {'tool': 'ase_md', 'temperature': -math.inf}, 'not a finite number'),
    ('md_sim', {'tool': 'mpi_probe', 'duration': math.nan}, 'duration: nan is not a finite'),
    ('md_sim', {'seed': DEEP}, 'nested deeper than 32 levels'),
    ('md_sim_batch', {'params': [{'duration': 0}, {'duration': -1}]}, 'minimum of 0'),
    ('md_sim_batch', {'iterations': 2, 'params': {'temperature': math.nan}}, 'finite'),
    ('call_tool', {'name': 'ase_md', 'arguments': {'temperature': math.nan}}, 'not a finite'),
    ('call_tool', {'name': 'mock_md', 'arguments': '{"duration": Infinity}'}, 'not a finite'),
    ('call_tool', {'name': 'mpi_probe', 'arguments': {'num_nodes': 1, 'duration': 1e9}}, 'maximum'),
    ('cancel', {}, 'exactly one of'),
    ('cancel', {'call_key': 'a', 'batch_key': 'b'}, 'exactly one of'),
]


def test_bad_action_arguments_leave_the_director_serving(run_dir: pathlib.Path):
    async def main():
        async with running_directors(run_dir, nodes=1, partitions=1) as (manager, (handle,), _):
            rejected = []
            for action, kwargs, _ in ACTION_CASES:
                with pytest.raises(ConfigurationError) as info:
                    await call(manager, handle, action, **kwargs)
                rejected.append(str(info.value))
            # An object that cannot be serialized is rejected before submission.
            with pytest.raises(ConfigurationError) as unserializable:
                await call(manager, handle, 'md_sim', duration=threading.Lock())
            status = await call(manager, handle, 'status')
            served = await call(manager, handle, 'md_sim', duration=0)
            return rejected, unserializable.value, status, served

    rejected, unserializable, status, served = asyncio.run(main())
    for (action, kwargs, message), error in zip(ACTION_CASES, rejected, strict=True):
        assert message in error, (action, kwargs, error)
    assert 'duration=<unlocked _thread.lock' in str(unserializable)
    assert 'cannot be sent to a worker' in str(unserializable)
    # Every bad value was refused at the door: nothing reached a worker.
    assert status.done == 0 and status.failed == 0 and status.queued == 0
    assert served.ok


def test_the_table_has_at_least_30_bad_inputs():
    assert len(CLI_CASES) + 2 + 9 + len(ACTION_CASES) + 1 + 4 >= 30


def _run_with_a_journal(tmp_path: pathlib.Path) -> pathlib.Path:
    from actors.common.results import CallResult
    from actors.store.journal import encode

    run = tmp_path / 'reported'
    (run / 'journal').mkdir(parents=True)
    result = CallResult(
        call_id='director-0-0', director='director-0', partition=0, action='md_sim',
        tool='mock_md', params={}, ok=True, node='sim-node-001', worker=0, pid=1,
        start=1.0, end=2.0, status='ok',
    )  # fmt: skip
    (run / 'journal' / 'director-0.jsonl').write_bytes(encode(result) + b'\xff\xfe torn')
    return run


@pytest.mark.parametrize(
    ('argv', 'message'),
    [
        (['report', '{run}', '-o', '/nonexistent/dir/x.png'], 'cannot write the report to'),
        (['report', '{run}', '-o', '{run}/x.txt'], "Format 'txt' is not supported"),
        (['endpoint-config', '--site', 'aurora', '--install', '{file}'], 'is a file'),
    ],
)
def test_bad_subcommand_input_is_one_clear_line(
    argv: list[str],
    message: str,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
):
    run = _run_with_a_journal(tmp_path)
    a_file = tmp_path / 'a-file'
    a_file.write_text('x')
    argv = [a.format(run=run, file=a_file) for a in argv]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_report_reads_past_a_garbled_journal_line(tmp_path: pathlib.Path):
    run = _run_with_a_journal(tmp_path)
    assert main(['report', str(run), '-o', str(tmp_path / 'r.png')]) == 0
    assert (tmp_path / 'r.png').stat().st_size > 0
