"""The journal's group commits and sync modes: nothing is answered before it is written."""

from __future__ import annotations

import os
import pathlib
import threading

import pytest

from actors.common.results import CallResult
from actors.store.journal import Journal
from actors.store.journal import encode
from actors.store.journal import read_journal


def _result(i: int, **fields: object) -> CallResult:
    return CallResult(
        call_id=f'director-0-{i}',
        director='director-0',
        partition=0,
        action='md_sim_batch',
        tool='mock_md',
        params={'duration': 0.0},
        ok=True,
        status='ok',
        **fields,  # type: ignore[arg-type]
    )


class Recorder:
    """Durable-callbacks that note which thread ran them and what was on disk then."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.done = threading.Event()
        self.calls: list[tuple[int, BaseException | None, int, str]] = []
        self.lock = threading.Lock()

    def callback(self, i: int, expected: int | None = None):
        def durable(error: BaseException | None) -> None:
            on_disk = len(list(read_journal(self.path)))
            with self.lock:
                self.calls.append((i, error, on_disk, threading.current_thread().name))
                if expected is not None and len(self.calls) == expected:
                    self.done.set()

        return durable


def test_lazy_results_wait_for_the_urgent_one_and_share_its_commit(tmp_path: pathlib.Path):
    path = tmp_path / 'journal' / 'director-0.jsonl'
    # A linger far longer than the test: only the urgent write commits the group.
    journal = Journal(path, linger=600, max_group=1000)
    recorder = Recorder(path)
    try:
        for i in range(5):
            journal.write(_result(i), recorder.callback(i, expected=6), urgent=False)
        assert recorder.calls == []
        assert list(read_journal(path)) == []
        journal.write(_result(5), recorder.callback(5, expected=6), urgent=True)
        assert recorder.done.wait(30)
    finally:
        journal.close()
    # Each result was on disk, with the whole group, before its callback ran.
    assert [i for i, *_ in recorder.calls] == list(range(6))
    assert all(error is None and on_disk == 6 for _, error, on_disk, _ in recorder.calls)
    assert [r['call_id'] for r in read_journal(path)] == [f'director-0-{i}' for i in range(6)]


def test_a_full_group_is_committed_without_an_urgent_result(tmp_path: pathlib.Path):
    path = tmp_path / 'director-0.jsonl'
    journal = Journal(path, linger=600, max_group=4)
    recorder = Recorder(path)
    try:
        for i in range(4):
            journal.write(_result(i), recorder.callback(i, expected=4), urgent=False)
        assert recorder.done.wait(30)
    finally:
        journal.close()
    assert sorted(i for i, *_ in recorder.calls) == [0, 1, 2, 3]
    assert all(on_disk >= 4 for _, _, on_disk, _ in recorder.calls)


def test_lingering_results_are_committed_after_the_linger(tmp_path: pathlib.Path):
    path = tmp_path / 'director-0.jsonl'
    journal = Journal(path, linger=0.05)
    recorder = Recorder(path)
    try:
        journal.write(_result(0), recorder.callback(0, expected=1), urgent=False)
        assert recorder.done.wait(30)
    finally:
        journal.close()
    assert recorder.calls[0][1:3] == (None, 1)
    assert recorder.calls[0][3] == 'journal'


def test_a_lone_urgent_result_is_committed_by_the_caller(tmp_path: pathlib.Path):
    path = tmp_path / 'director-0.jsonl'
    journal = Journal(path)
    recorder = Recorder(path)
    try:
        journal.write(_result(0), recorder.callback(0))
        # Committed before write() returned, on this thread: no hand-off.
        assert recorder.calls == [(0, None, 1, threading.current_thread().name)]
    finally:
        journal.close()


def test_flush_commits_what_lingers_and_close_commits_the_rest(tmp_path: pathlib.Path):
    path = tmp_path / 'director-0.jsonl'
    journal = Journal(path, linger=600)
    recorder = Recorder(path)
    journal.write(_result(0), recorder.callback(0, expected=1), urgent=False)
    journal.flush()
    assert recorder.done.wait(30)
    journal.write(_result(1), recorder.callback(1), urgent=False)
    journal.close()
    assert [i for i, *_ in recorder.calls] == [0, 1]
    assert len(list(read_journal(path))) == 2
    # After close, a write fails through its callback instead of being lost silently.
    journal.write(_result(2), recorder.callback(2))
    error = recorder.calls[-1][1]
    assert isinstance(error, RuntimeError)
    assert 'closed' in str(error)
    with pytest.raises(RuntimeError, match='closed'):
        journal.submit(_result(3)).result(timeout=5)


def test_encode_keeps_every_value(tmp_path: pathlib.Path):
    # Non-string keys, sets (repr), and an integer beyond 64 bits (stdlib fallback).
    line = encode(_result(0, value={1: {2, 3}, 'big': 2**70}))
    assert line.endswith(b'\n')
    path = tmp_path / 'j.jsonl'
    path.write_bytes(line + encode(_result(1, value=[1.5, None])))
    first, second = read_journal(path)
    assert first['value'] == {'1': '{2, 3}', 'big': 2**70}
    assert second['value'] == [1.5, None]
    assert CallResult.from_dict(second) == _result(1, value=[1.5, None])


def test_nan_and_infinities_come_back_as_computed(tmp_path: pathlib.Path):
    """orjson writes NaN as null: a resumed result would say None where it said NaN."""
    import math

    value = {'energy': math.nan, 'bounds': [math.inf, -math.inf], 'unset': None}
    path = tmp_path / 'j.jsonl'
    path.write_bytes(encode(_result(0, value=value)))
    (record,) = read_journal(path)
    assert math.isnan(record['value']['energy'])
    assert record['value']['bounds'] == [math.inf, -math.inf]
    assert record['value']['unset'] is None


class FsyncLog:
    """Wraps ``os.fsync`` to note, in order with the answers, when the disk was synced."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: pathlib.Path) -> None:
        self.path = path
        self.events: list[str] = []
        self.synced = threading.Event()
        self._fsync = os.fsync
        monkeypatch.setattr(os, 'fsync', self._logged)

    def _logged(self, fd: int) -> None:
        self._fsync(fd)
        self.events.append('fsync')
        self.synced.set()

    def answer(self, error: BaseException | None) -> None:
        assert error is None
        # Written before the answer whatever the sync mode: a dying process loses nothing.
        assert len(list(read_journal(self.path))) == 1
        self.events.append('answer')


def test_after_answer_answers_first_and_fsyncs_right_after(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / 'director-0.jsonl'
    log = FsyncLog(monkeypatch, path)
    journal = Journal(path)
    assert journal.sync == 'after-answer'
    try:
        journal.write(_result(0), log.answer)
        assert log.events[0] == 'answer'
        # The sync thread fsyncs without waiting for more commits or close().
        assert log.synced.wait(30)
        assert log.events == ['answer', 'fsync']
    finally:
        journal.close()


def test_before_answer_fsyncs_before_answering(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / 'director-0.jsonl'
    log = FsyncLog(monkeypatch, path)
    journal = Journal(path, sync='before-answer')
    journal.write(_result(0), log.answer)
    journal.close()
    assert log.events == ['fsync', 'answer']


def test_off_never_fsyncs(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / 'director-0.jsonl'
    log = FsyncLog(monkeypatch, path)
    journal = Journal(path, sync='off')
    journal.write(_result(0), log.answer)
    journal.close()
    assert log.events == ['answer']


def test_close_fsyncs_what_was_answered(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / 'director-0.jsonl'
    log = FsyncLog(monkeypatch, path)
    journal = Journal(path, linger=600)
    journal.write(_result(0), log.answer, urgent=False)
    journal.close()
    assert log.events[0] == 'answer'
    assert 'fsync' in log.events
    assert len(list(read_journal(path))) == 1


def test_an_unknown_sync_mode_is_named(tmp_path: pathlib.Path):
    with pytest.raises(ValueError, match="'always' is not one of after-answer, before-answer, off"):
        Journal(tmp_path / 'j.jsonl', sync='always')  # type: ignore[arg-type]


def _append_one(path: pathlib.Path, i: int) -> None:
    journal = Journal(path, sync='before-answer')
    try:
        journal.submit(_result(i, call_key=f'k{i}')).result(timeout=5)
    finally:
        journal.close()


@pytest.mark.parametrize(
    'tail',
    [
        b'{"call_id": "director-0-9", "status": "o',  # crash mid-write
        '{"call_id": "x", "note": "caf\u00e9'.encode()[:-1],  # torn inside a character
        b'\xff\xfe garbage',  # not UTF-8
    ],
)
def test_a_torn_tail_is_cut_off_and_the_next_record_is_whole(
    tmp_path: pathlib.Path,
    tail: bytes,
    caplog: pytest.LogCaptureFixture,
):
    path = tmp_path / 'director-0.jsonl'
    path.write_bytes(encode(_result(0, call_key='k0')) + tail)
    _append_one(path, 1)
    records = list(read_journal(path))
    assert [r['call_key'] for r in records] == ['k0', 'k1']
    assert 'cut off a torn last line' in caplog.text
    (kept,) = tmp_path.glob('director-0.jsonl.torn-*')
    assert kept.read_bytes() == tail
    assert kept.stat().st_mode & 0o077 == 0


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path: pathlib.Path):
    path = tmp_path / 'director-0.jsonl'
    path.write_bytes(encode(_result(0, call_key='k0')).rstrip(b'\n'))
    _append_one(path, 1)
    assert [r['call_key'] for r in read_journal(path)] == ['k0', 'k1']
    assert not list(tmp_path.glob('*.torn-*'))


def test_bad_lines_in_the_middle_are_skipped_and_named(
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
):
    path = tmp_path / 'director-0.jsonl'
    path.write_bytes(
        encode(_result(0, call_key='k0'))
        + b'\xc3(\n'
        + b'[1, 2]\n'
        + b'[' * 5000
        + b'\n'
        + encode(_result(1, call_key='k1')),
    )
    assert [r['call_key'] for r in read_journal(path)] == ['k0', 'k1']
    assert f'{path}:2 is not a complete record' in caplog.text
    assert f'{path}:3 is not a complete record' in caplog.text


def test_the_journal_is_private_whatever_the_umask(tmp_path: pathlib.Path):
    old = os.umask(0)
    try:
        path = tmp_path / 'journal' / 'director-0.jsonl'
        _append_one(path, 0)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
