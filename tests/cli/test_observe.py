"""Progress bars, recent throughput, ``launch.py status`` and ``launch.py report``."""

from __future__ import annotations

import asyncio
import json
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from actors.calling.calls import call
from actors.cli.report import render_report
from actors.common.errors import ConfigurationError
from actors.director.rate import RateMeter
from actors.job.partition import Partition
from actors.store.manifest import DirectorEntry
from actors.store.manifest import RunManifest
from tests.cli.test_cli import LAUNCH
from tests.cli.test_cli import launch
from tests.helpers import running_directors


def png_size(path: pathlib.Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG file'
    return struct.unpack('>II', data[16:24])


@pytest.mark.timeout(10)
def test_rate_meter_counts_only_the_window():
    now = [1000.0]
    meter = RateMeter(window=10, clock=lambda: now[0])
    assert meter.rate() == 0.0
    now[0] = 1002.0
    meter.record(20)
    # 20 events in the 2 s since the meter was created.
    assert meter.rate() == pytest.approx(10.0)
    now[0] = 1010.5
    meter.record(5)
    # Whole seconds 1001..1010 plus the current half second: 9.5 s, both buckets.
    assert meter.rate() == pytest.approx(25 / 9.5)
    now[0] = 1012.0
    # The bucket of second 1002 has left the window [1003, 1012].
    assert meter.rate() == pytest.approx(5 / 9)
    now[0] = 1030.0
    assert meter.rate() == 0.0
    with pytest.raises(ValueError, match='window must be >= 1'):
        RateMeter(window=0)


@pytest.mark.timeout(120)
def test_status_reports_recent_throughput(run_dir: pathlib.Path):
    async def main():
        async with running_directors(run_dir, nodes=1, partitions=1) as (manager, handles, _):
            (handle,) = handles
            results = await call(manager, handle, 'md_sim_batch', iterations=20)
            return results, await call(manager, handle, 'status')

    results, status = asyncio.run(main())
    assert all(r.ok for r in results)
    assert status.done == 20
    assert status.throughput_window == 10
    # 20 calls finished within the last window.
    assert status.recent_throughput >= 20 / status.throughput_window


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory: pytest.TempPathFactory):
    """One real run with progress bars on; its run dir and the CLI's output."""
    base = tmp_path_factory.mktemp('observe')
    run_dir = base / 'run'
    result = launch('--duration', '0.3', '--iterations', '11', '--run-dir', str(run_dir), cwd=base)
    assert result.returncode == 0, result.stderr
    return run_dir, result


@pytest.mark.timeout(180)
def test_progress_bars_and_results_file(finished_run):
    run_dir, result = finished_run
    # One bar per Director on stderr, finished: 1 md_sim + 11 batch calls each.
    for director in ('director-0', 'director-1'):
        line = next(x for x in result.stderr.splitlines() if x.startswith(director))
        assert '12/12' in line and '0 failed' in line and 'calls/s' in line, line
    records = [json.loads(x) for x in (run_dir / 'results.jsonl').read_text().splitlines()]
    assert len(records) == 24
    assert {r['director'] for r in records} == {'director-0', 'director-1'}
    assert all(r['ok'] and r['node'] for r in records)


@pytest.mark.timeout(120)
def test_quiet_and_json_turn_progress_off(tmp_path: pathlib.Path):
    for flag in ('--quiet', '--json'):
        result = launch(
            flag,
            '--duration',
            '0',
            '--iterations',
            '2',
            '--partitions',
            '1',
            '--simulate-nodes',
            '1',
            '--run-dir',
            str(tmp_path / flag.strip('-')),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert 'director-0' not in result.stderr, result.stderr
        assert 'calls/s' not in result.stderr


@pytest.mark.timeout(180)
def test_report_draws_every_call(finished_run, tmp_path: pathlib.Path):
    run_dir, _ = finished_run
    result = launch('report', str(run_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    png = run_dir / 'report.png'
    assert 'report.png: 24 calls on 8 worker slots' in result.stdout
    width, height = png_size(png)
    assert width == 1200 and height > 400
    assert png.stat().st_size > 10_000

    report = render_report(run_dir, tmp_path / 'again.png')
    assert report.bars == 24 and report.unplaced == 0
    # The Directors' journals are the source when the run has them.
    assert report.source == sorted((run_dir / 'journal').glob('*.jsonl'))
    assert len(report.source) == 2
    assert len(report.lanes) == 8
    assert {node for node, _ in report.lanes} == {f'sim-node-00{i}' for i in range(1, 5)}
    assert set(report.utilization) == {0, 1}
    assert all(0 < u <= 1 for u in report.utilization.values())


@pytest.mark.timeout(60)
def test_report_prefers_the_journal(finished_run, tmp_path: pathlib.Path):
    run_dir, _ = finished_run
    copy = tmp_path / 'run'
    shutil.copytree(run_dir, copy)
    records = [json.loads(x) for x in (copy / 'results.jsonl').read_text().splitlines()]
    mine = [r for r in records if r['director'] == 'director-0']
    journal = copy / 'journal'
    shutil.rmtree(journal)
    journal.mkdir()
    lost = {**mine[0], 'node': None, 'worker': None, 'ok': False}
    lines = [json.dumps(r) for r in [*mine, lost]]
    # A writer killed mid-line leaves a torn last line; it is skipped.
    (journal / 'director-0.jsonl').write_text('\n'.join(lines) + '\n{"call_id": "dire')
    report = render_report(copy)
    assert report.source == [journal / 'director-0.jsonl']
    assert report.bars == len(mine) and report.unplaced == 1
    assert set(report.utilization) == {0}


@pytest.mark.timeout(60)
def test_report_falls_back_to_results_jsonl(finished_run, tmp_path: pathlib.Path):
    run_dir, _ = finished_run
    copy = tmp_path / 'run'
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / 'journal')
    report = render_report(copy)
    assert report.source == [copy / 'results.jsonl']
    assert report.bars == 24 and report.unplaced == 0


@pytest.mark.timeout(30)
def test_report_bad_run_dir_is_one_clear_line(tmp_path: pathlib.Path):
    result = launch('report', str(tmp_path / 'nowhere'), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count('\n') == 0
    assert 'does not exist' in result.stderr
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ConfigurationError, match=r'no journal/\*\.jsonl and no results\.jsonl'):
        render_report(tmp_path / 'empty')


def _manifest(run_dir: pathlib.Path, exchange: str) -> None:
    RunManifest(
        run_dir=str(run_dir),
        exchange=exchange,
        site='local',
        executor='local',
        directors=[
            DirectorEntry(
                partition=Partition(0, ('sim-node-001',), 'x'),
                agent_uid='6a3f8f4e-3d63-4f7b-9a53-2f4d1c1f0c11',
                name='director-0',
            ),
        ],
    ).write()


@pytest.mark.timeout(30)
@pytest.mark.parametrize('exchange', ['local', 'http'])
def test_status_refuses_exchanges_other_processes_cannot_join(exchange, tmp_path: pathlib.Path):
    _manifest(tmp_path, exchange)
    result = launch('status', str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert 'can be reached only from the launching process' in lines[0]
    assert '--exchange redis://HOST:PORT' in lines[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize('exchange', ['redis://127.0.0.1:1', 'http://127.0.0.1:1'])
def test_status_of_an_unreachable_exchange_is_one_line(exchange, tmp_path: pathlib.Path):
    _manifest(tmp_path, exchange)
    result = launch('status', str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f'cannot join the exchange {exchange}' in lines[0]


@pytest.mark.timeout(30)
def test_status_without_manifest_is_one_clear_line(tmp_path: pathlib.Path):
    result = launch('status', str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert 'has no manifest.json' in result.stderr
    assert 'Traceback' not in result.stderr


@pytest.fixture
def redis_url(tmp_path: pathlib.Path):
    server = shutil.which('redis-server')
    if server is None:
        pytest.skip('redis-server is not installed (apt-get install redis-server)')
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [server, '--port', str(port), '--save', '', '--appendonly', 'no', '--dir', str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        yield f'redis://127.0.0.1:{port}'
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def _accounted(stdout: str) -> int:
    rows = json.loads(stdout)
    return sum(
        r['status']['queued'] + r['status']['running'] + r['status']['done'] + r['status']['failed']
        for r in rows
        if r['status']
    )


@pytest.mark.timeout(240)
def test_status_of_directors_running_in_another_process(redis_url, tmp_path: pathlib.Path):
    run_dir = tmp_path / 'run'
    iterations = 40
    run = subprocess.Popen(
        [
            sys.executable,
            LAUNCH,
            '--executor',
            'process',
            '--exchange',
            redis_url,
            '--duration',
            '0.5',
            '--iterations',
            str(iterations),
            '--run-dir',
            str(run_dir),
            '--quiet',
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 150
        while not (run_dir / 'manifest.json').exists():
            assert run.poll() is None, run.stderr.read() if run.stderr else ''
            assert time.time() < deadline, 'the run never wrote its manifest'
            time.sleep(0.2)
        # Ask until the whole batch is submitted (or the run is over).
        for _ in range(5):
            result = launch('status', str(run_dir), '--json', cwd=tmp_path)
            running = run.poll() is None
            if result.returncode or not running:
                break
            if _accounted(result.stdout) == 2 * (iterations + 1):
                break
    finally:
        _, stderr = run.communicate(timeout=180)
    assert run.returncode == 0, stderr
    assert running, 'the run ended before status was asked; make it longer'
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r['director'] for r in rows] == ['director-0', 'director-1']
    for index, row in enumerate(rows):
        st = row['status']
        assert row['problem'] is None
        assert st['partition'] == index
        assert st['slots'] == 4
        assert st['nodes'] == [f'sim-node-00{2 * index + i}' for i in (1, 2)]
        assert st['queued'] + st['running'] + st['done'] + st['failed'] == iterations + 1
        assert st['throughput_window'] == 10

    table = launch('status', str(run_dir), cwd=tmp_path)
    # The run is over: every Director says so, and the exit status is 1.
    assert table.returncode == 1
    assert table.stdout.count('the Director has stopped') == 2, table.stdout
