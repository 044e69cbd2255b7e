"""Runs are private, answer only their own calls, and resume where they are given."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import pytest

from actors.calling.calls import call
from actors.client.exchange import PASSWORD_VARIABLE
from actors.client.exchange import free_port
from actors.common.errors import ConfigurationError
from tests.conftest import REPO
from tests.helpers import Server
from tests.helpers import running_directors

pytestmark = pytest.mark.timeout(180)

LAUNCH = str(REPO / 'launch.py')


def _launch(
    *args: str,
    cwd: pathlib.Path,
    umask: int | None = None,
    password: str | None = None,
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_VARIABLE}
    if password is not None:
        env[PASSWORD_VARIABLE] = password
    return subprocess.run(
        [sys.executable, LAUNCH, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=150,
        stdin=subprocess.DEVNULL,
        check=False,
        env=env,
        preexec_fn=None if umask is None else (lambda: os.umask(umask)),
    )


def test_a_run_under_umask_000_leaves_nothing_open_to_others(tmp_path: pathlib.Path):
    run_dir = tmp_path / 'runs' / 'open'
    done = _launch(
        '--quiet',
        '--duration',
        '0',
        '--iterations',
        '2',
        '--run-dir',
        str(run_dir),
        cwd=tmp_path,
        umask=0,
    )
    assert done.returncode == 0, done.stderr
    open_paths = []
    for path in [run_dir, *run_dir.rglob('*')]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        if mode & 0o077:
            open_paths.append(f'{path.relative_to(tmp_path)} {stat.filemode(mode)}')
    assert not open_paths, open_paths
    assert (run_dir / 'manifest.json').stat().st_mode & 0o777 == 0o600
    assert (run_dir / 'lean-imports').exists() or list(run_dir.rglob('lean-imports'))


def test_a_copied_run_dir_resumes_itself_not_the_original(tmp_path: pathlib.Path):
    original = tmp_path / 'a'
    first = _launch(
        '--json',
        '--duration',
        '0',
        '--iterations',
        '2',
        '--partitions',
        '1',
        '--simulate-nodes',
        '1',
        '--run-dir',
        str(original),
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    copy = tmp_path / 'b'
    shutil.copytree(original, copy)
    # The original's journals go: a resume of the copy must not need them (or write there).
    shutil.rmtree(original / 'journal')
    resumed = _launch('--resume', str(copy), '--json', cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    before = {r['call_key']: r['call_id'] for r in json.loads(first.stdout)['results']}
    after = {r['call_key']: r['call_id'] for r in json.loads(resumed.stdout)['results']}
    assert after == before  # every call answered from the copy's journal, none run again
    assert json.loads((copy / 'manifest.json').read_text())['run_dir'] == str(copy)
    assert not (original / 'journal').exists()


def test_a_key_is_refused_with_other_parameters_and_replayed_with_the_same(
    run_dir: pathlib.Path,
):
    async def main():
        async with running_directors(run_dir, nodes=1, partitions=1) as (manager, (handle,), _):
            first = await call(manager, handle, 'md_sim', call_key='k', duration=0, seed=1)
            with pytest.raises(ConfigurationError) as other:
                await call(manager, handle, 'md_sim', call_key='k', duration=0, seed=2)
            with pytest.raises(ConfigurationError) as other_tool:
                await call(manager, handle, 'md_sim', call_key='k', tool='ase_md', steps=1)
            with pytest.raises(ConfigurationError) as in_batch:
                await call(
                    manager,
                    handle,
                    'md_sim_batch',
                    params=[{'duration': 0, 'seed': 1}, {'seed': 3}],
                    call_keys=['new', 'k'],
                )
            again = await call(manager, handle, 'md_sim', call_key='k', duration=0, seed=1)
            status = await call(manager, handle, 'status')
            return first, other.value, other_tool.value, in_batch.value, again, status

    first, other, other_tool, in_batch, again, status = asyncio.run(main())
    assert "call key 'k' was journaled for mock_md with {'duration': 0, 'seed': 1}" in str(other)
    assert "this call is mock_md with {'duration': 0, 'seed': 2}" in str(other)
    assert 'this call is ase_md' in str(other_tool)
    assert "call key 'k'" in str(in_batch)
    assert again.call_id == first.call_id  # replayed, not run again
    assert status.done == 1  # nothing of the refused calls ran


def test_a_director_starts_on_a_garbled_journal_and_keeps_what_is_whole(run_dir: pathlib.Path):
    async def first_run():
        async with running_directors(run_dir, nodes=1, partitions=1) as (manager, (handle,), _):
            return await call(manager, handle, 'md_sim', call_key='kept', duration=0)

    kept = asyncio.run(first_run())
    journal = run_dir / 'journal' / 'director-0.jsonl'
    # A bad byte mid-file and a line torn inside a multi-byte character at the end.
    with journal.open('ab') as file:
        file.write(b'\xff\xfe not utf-8\n' + '{"call_key": "torn", "note": "\u00e9'.encode()[:-1])

    async def second_run():
        async with running_directors(run_dir, nodes=1, partitions=1) as (manager, (handle,), _):
            replayed = await call(manager, handle, 'md_sim', call_key='kept', duration=0)
            fresh = await call(manager, handle, 'md_sim', call_key='fresh', duration=0)
            return replayed, fresh

    replayed, fresh = asyncio.run(second_run())
    assert replayed.call_id == kept.call_id and fresh.ok
    lines = journal.read_bytes().split(b'\n')
    assert lines[-1] == b''  # whole lines only: the torn tail was cut off
    assert json.loads(lines[-2])['call_key'] == 'fresh'
    assert list(journal.parent.glob('director-0.jsonl.torn-*'))


PASSWORD = 'p@ss word'


def _redis_with_password(tmp_path: pathlib.Path) -> Server:
    redis = shutil.which('redis-server')
    if redis is None:
        pytest.skip('redis-server is not installed (.ci/run installs it with apt-get)')
    port = free_port()
    argv = [redis, '--port', str(port), '--bind', '127.0.0.1', '--save', '']
    server = Server([*argv, '--requirepass', PASSWORD], port, tmp_path / 'redis.log')
    server.start()
    return server


def _holding_the_password(run_dir: pathlib.Path) -> list[str]:
    """Files under the run dir that contain the password (raw or URL-quoted)."""
    return [
        str(path.relative_to(run_dir))
        for path in run_dir.rglob('*')
        if path.is_file()
        and any(s in path.read_bytes() for s in (PASSWORD.encode(), b'p%40ss', b'p%40ss%20word'))
    ]


ONE_CALL = ('--iterations', '1', '--duration', '0', '--partitions', '1', '--simulate-nodes', '1')


def test_a_redis_password_in_the_exchange_url_is_used_and_not_written(tmp_path: pathlib.Path):
    server = _redis_with_password(tmp_path)
    run_dir = tmp_path / 'run'
    try:
        done = _launch(
            '--exchange',
            f'redis://:p%40ss%20word@127.0.0.1:{server.port}',
            '--quiet',
            *ONE_CALL,
            '--run-dir',
            str(run_dir),
            cwd=tmp_path,
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((run_dir / 'manifest.json').read_text())
    assert manifest['exchange'] == f'redis://127.0.0.1:{server.port}'
    assert manifest['exchange_needs_password'] is True
    assert not _holding_the_password(run_dir)


def test_status_and_resume_ask_for_the_exchange_password(tmp_path: pathlib.Path):
    server = _redis_with_password(tmp_path)
    run_dir = tmp_path / 'run'
    exchange = f'redis://127.0.0.1:{server.port}'
    try:
        first = _launch(
            '--exchange', exchange, '--json', *ONE_CALL, '--run-dir', str(run_dir),
            cwd=tmp_path, password=PASSWORD,
        )  # fmt: skip
        assert first.returncode == 0, first.stderr[-2000:]
        assert not _holding_the_password(run_dir)
        missing = f'the exchange {exchange} of run {run_dir} needs a password'
        status = _launch('status', str(run_dir), cwd=tmp_path)
        assert status.returncode == 2, status.stderr
        assert missing in status.stderr and PASSWORD_VARIABLE in status.stderr
        resumed = _launch('--resume', str(run_dir), '--json', cwd=tmp_path)
        assert resumed.returncode == 2, resumed.stderr
        assert missing in resumed.stderr and PASSWORD_VARIABLE in resumed.stderr

        wrong = _launch('status', str(run_dir), cwd=tmp_path, password='not it')
        assert wrong.returncode == 1, wrong.stderr
        assert 'invalid username-password pair' in wrong.stderr
        joined = _launch('status', str(run_dir), '--json', cwd=tmp_path, password=PASSWORD)
        assert joined.returncode == 1, joined.stderr  # the run is over, but the exchange let us in
        stopped = 'the Director has stopped (the run is over)'
        assert json.loads(joined.stdout)[0]['problem'] == stopped
        resumed = _launch('--resume', str(run_dir), '--json', cwd=tmp_path, password=PASSWORD)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        before = [r['call_id'] for r in json.loads(first.stdout)['results']]
        assert [r['call_id'] for r in json.loads(resumed.stdout)['results']] == before
        assert not _holding_the_password(run_dir)
    finally:
        server.stop()


def test_a_manifest_with_a_password_in_its_url_is_never_written(tmp_path: pathlib.Path):
    from actors.client.exchange import redact
    from actors.store.manifest import RunManifest

    url = 'redis://user:p%40ss@127.0.0.1:6380'
    manifest = RunManifest(str(tmp_path), url, 'local', 'process', directors=[])
    with pytest.raises(ValueError, match='without its password'):
        manifest.write()
    assert not (tmp_path / 'manifest.json').exists()
    assert redact(url) == 'redis://user@127.0.0.1:6380'
    manifest.exchange, manifest.exchange_needs_password = redact(url), True
    manifest.write()
    assert RunManifest.read(tmp_path).exchange_needs_password is True
