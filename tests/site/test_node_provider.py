"""NodeProvider: the Director's block starts and Parsl's status poller never interleave."""

from __future__ import annotations

import pathlib
import threading
import time

from parsl.launchers import SimpleLauncher

from actors.site.node_provider import NodeProvider

BLOCKS = 25


def test_status_polled_while_blocks_start_never_breaks(tmp_path: pathlib.Path):
    """Parsl's poller (here: a thread polling without pause) and a Director starting blocks.

    ``LocalProvider.status`` walks its job table; a block added mid-walk
    raised ``RuntimeError: dictionary changed size during iteration`` inside
    Parsl (seen in a full ``python -m bench`` run).
    """
    provider = NodeProvider(lambda node: (f'export NODE={node}', SimpleLauncher()), BLOCKS)
    provider.script_dir = str(tmp_path)
    started: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def poll() -> None:
        polls = 0
        while not done.is_set() or polls == 0:
            try:
                provider.status(list(started))
            except BaseException as e:  # what Parsl's poller would have met
                errors.append(e)
                return
            polls += 1

    poller = threading.Thread(target=poll, name='status-poller')
    poller.start()
    try:
        for i in range(BLOCKS):
            with provider.pinned(f'node-{i:03d}'):
                started.append(provider.submit('sleep 60', 1))
    finally:
        done.set()
        poller.join(timeout=60)
        provider.cancel(list(started))
    assert not poller.is_alive()
    assert not errors, errors
    assert sorted(provider.node_of_job.values()) == [f'node-{i:03d}' for i in range(BLOCKS)]
    # Cancelled: each block's process group ends (SIGTERM), and the provider says so.
    deadline = time.monotonic() + 30
    while not all(s.terminal for s in provider.status(started)):
        assert time.monotonic() < deadline, provider.status(started)
        time.sleep(0.05)
