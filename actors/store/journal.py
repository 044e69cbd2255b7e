"""Durable call results: one JSON-lines journal per Director.

Every finished call is appended to ``<run_dir>/journal/<director-name>.jsonl``
as one line holding ``CallResult.to_dict()``, written to the operating system
before the caller is answered and fsync'ed to the disk (by default) right
after: see ``SyncMode``. A killed client or Director therefore loses no
finished result, and ``launch.py --resume`` reads the journals back to skip
what is done.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any
from typing import Literal
from typing import get_args

import orjson

from actors.common.errors import ConfigurationError
from actors.common.errors import describe_os_error
from actors.common.private import open_private
from actors.common.private import private_dir
from actors.common.private import write_private
from actors.common.results import CallResult

logger = logging.getLogger(__name__)

JOURNAL_DIR = 'journal'

FINAL_STATUSES = frozenset({'ok', 'failed', 'timed_out'})
"""Outcomes that a resumed run keeps; any other outcome (``lost``,
``cancelled``, ``refused``) is run again."""


def journal_path(run_dir: str | os.PathLike[str], director: str) -> pathlib.Path:
    """Where ``director``'s journal lives in ``run_dir``."""
    return pathlib.Path(run_dir, JOURNAL_DIR, f'{director}.jsonl')


SyncMode = Literal['after-answer', 'before-answer', 'off']
"""When a commit is fsync'ed, relative to answering its callers.

Every commit is written and flushed to the operating system before its
callers are answered, so any process may die afterwards (client, Director,
worker) and the result is in the file. What differs is a crash of the node
itself (kernel panic, power loss), which loses what the OS had not yet put
on disk:

- ``after-answer`` (default): a background thread fsyncs as soon as a commit
  is written, concurrently with the answer: a node crash can lose only the
  results answered in the last fsync's time (about a millisecond), which a
  resumed run computes again. The answer does not wait for the disk.
- ``before-answer``: fsync before answering: a result that was answered
  survives anything. Costs one fsync (0.3-0.5 ms here, more on a parallel
  file system) on every lone call's round trip; batches share one per group.
- ``off``: never fsync; the OS writes the file back when it likes.
"""

SYNC_MODES: tuple[SyncMode, ...] = get_args(SyncMode)
DEFAULT_SYNC: SyncMode = 'after-answer'


def check_sync_mode(sync: str) -> SyncMode:
    """``sync`` if it is a ``SyncMode``.

    Raises:
        ConfigurationError: If it is not, naming the valid modes.

    """
    if sync not in SYNC_MODES:
        raise ConfigurationError(
            f'journal sync mode {sync!r} is not one of {", ".join(SYNC_MODES)}',
        )
    return sync


DEFAULT_LINGER = 0.05
"""Seconds a result that nobody waits for yet may sit in memory before it is
committed (see ``Journal.write``'s ``urgent``)."""

MAX_GROUP = 512
"""Queued results that are committed at once, lingering or not."""

Durable = Callable[[BaseException | None], None]
"""Called on the committing thread once a result is committed (``None``) or
could not be written (the error)."""


class Journal:
    """Append-only JSON-lines file of one Director's finished calls.

    Writes go through one writer thread that commits whatever has queued up
    with a single write and flush (and fsync): a group commit. A result is
    durable when its callback runs (or its future resolves).

    When each commit also reaches the disk (fsync) is the ``sync`` mode's
    choice (see ``SyncMode``); with ``after-answer`` a second thread fsyncs
    behind the writer, one fsync for however many commits it finds.

    A result written with ``urgent=False`` (one call of a batch whose caller
    still waits for other calls) may linger in memory for up to ``linger``
    seconds, or until ``max_group`` results or an urgent one have queued, so
    that a batch costs one fsync per group instead of one per call. Nothing
    is lost by that: a result counts as durable only once committed, and the
    caller is answered only after that.

    Args:
        path: The journal file; created (with its directory) if missing.
        sync: When commits are fsync'ed (see ``SyncMode``).
        linger: Longest wait, in seconds, before a non-urgent result is
            committed.
        max_group: Queued results that trigger a commit without waiting.

    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: SyncMode = DEFAULT_SYNC,
        linger: float = DEFAULT_LINGER,
        max_group: int = MAX_GROUP,
    ) -> None:
        self.sync = check_sync_mode(sync)
        self.path = pathlib.Path(path)
        private_dir(self.path.parent)
        self.linger = linger
        self.max_group = max_group
        recover_tail(self.path)
        self._file = open_private(self.path, 'ab')
        self._queue: list[tuple[CallResult, Durable]] = []
        self._urgent = False
        self._busy = False
        self._first_queued = 0.0
        self._cv = threading.Condition()
        self._closing = False
        self._failing: int | None = None
        """The errno of the last failed write or fsync, until one succeeds."""
        self._writer = threading.Thread(target=self._write_loop, name='journal', daemon=True)
        self._writer.start()
        # after-answer: commits written but not yet fsync'ed, and who fsyncs them.
        self._unsynced = False
        self._sync_cv = threading.Condition()
        self._syncer: threading.Thread | None = None
        if sync == 'after-answer':
            self._syncer = threading.Thread(
                target=self._sync_loop, name='journal-sync', daemon=True
            )
            self._syncer.start()

    def write(self, result: CallResult, durable: Durable, *, urgent: bool = True) -> None:
        """Queue a result; ``durable`` is called once it is committed.

        Args:
            result: The finished call.
            durable: Called on the committing thread with ``None`` once the
                result is committed (written, and fsync'ed if the sync mode
                says so), or with the error if it could not be.
            urgent: Commit as soon as possible (someone waits for this
                result); if false, the result may wait for a group to fill.

        """
        inline = False
        with self._cv:
            if self._closing:
                error: BaseException | None = RuntimeError(f'journal {self.path} is closed')
            elif urgent and not self._queue and not self._busy:
                # Nothing else to group with: commit on this thread, which saves
                # waking the writer (a single md_sim's result).
                error = None
                inline = self._busy = True
            else:
                error = None
                # Encoded on the writer thread: the caller is Parsl's result callback.
                self._queue.append((result, durable))
                if len(self._queue) == 1:
                    self._first_queued = time.monotonic()
                if urgent and not self._urgent:
                    self._urgent = True
                    self._cv.notify_all()
                elif len(self._queue) == 1 or len(self._queue) >= self.max_group:
                    # Start the linger clock, or commit a full group.
                    self._cv.notify_all()
        if error is not None:
            durable(error)
        elif inline:
            try:
                self._commit([(result, durable)])
            finally:
                self._committed()

    def flush(self) -> None:
        """Commit what is queued without waiting for more (returns at once)."""
        with self._cv:
            if self._queue and not self._urgent:
                self._urgent = True
                self._cv.notify_all()

    def submit(self, result: CallResult, *, urgent: bool = True) -> Future[None]:
        """Queue a result; the future resolves once it is committed."""
        future: Future[None] = Future()

        def durable(error: BaseException | None) -> None:
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        self.write(result, durable, urgent=urgent)
        return future

    def append(self, results: Iterable[CallResult]) -> None:
        """Append results and return once they are committed."""
        for future in [self.submit(r) for r in results]:
            future.result()

    def _next_group(self) -> list[tuple[CallResult, Durable]] | None:
        """Wait until a group is due; None once closed with nothing left."""
        with self._cv:
            while True:
                # Another thread may be committing: the file takes one commit at a time.
                if self._queue and not self._busy:
                    left = self._first_queued + self.linger - time.monotonic()
                    due = self._urgent or self._closing or len(self._queue) >= self.max_group
                    if due or left <= 0:
                        group, self._queue, self._urgent = self._queue, [], False
                        self._busy = True
                        return group
                    self._cv.wait(left)
                elif self._closing and not self._queue:
                    return None
                else:
                    self._cv.wait()

    def _write_loop(self) -> None:
        while (group := self._next_group()) is not None:
            try:
                self._commit(group)
            finally:
                self._committed()

    def _committed(self) -> None:
        """The file is free again: wake whoever waits to commit or close."""
        with self._cv:
            self._busy = False
            if self._queue or self._closing:
                self._cv.notify_all()

    def _commit(self, group: list[tuple[CallResult, Durable]]) -> None:
        """Write and flush a group, then tell each result's callback.

        ``before-answer`` fsyncs before the callbacks; ``after-answer`` hands
        the fsync to the sync thread after them.
        """
        try:
            self._file.write(b''.join(encode(result) for result, _ in group))
            self._file.flush()
            if self.sync == 'before-answer':
                os.fsync(self._file.fileno())
        except OSError as e:
            outcome: BaseException | None = self._failed('write', e)
        except Exception as e:
            logger.exception('cannot write journal %s', self.path)
            outcome = e
        else:
            outcome = None
            if self._failing is not None:
                self._failing = None
                logger.warning('journal %s: writing again', self.path)
        for _, durable in group:
            try:
                durable(outcome)
            except Exception:
                logger.exception('journal %s: a durable-callback failed', self.path)
        if outcome is None and self._syncer is not None:
            # After the callbacks: the answers go out while the disk works.
            with self._sync_cv:
                self._unsynced = True
                self._sync_cv.notify()

    def _sync_loop(self) -> None:
        """Sync to disk whatever was written since the last fsync, until closed."""
        while True:
            with self._sync_cv:
                while not self._unsynced and not self._closing:
                    self._sync_cv.wait()
                if not self._unsynced:
                    return
                self._unsynced = False
            try:
                os.fsync(self._file.fileno())
            except OSError as e:
                # Its callers are answered and the lines are in the OS: only a
                # node crash could still lose them.
                self._failed('fsync', e)

    def _failed(self, what: str, error: OSError) -> OSError:
        """``error`` with the journal's path in it, said in one line.

        A full disk fails every later commit the same way: one line when the
        failure starts (or changes), not a traceback per call.
        """
        if error.filename is None:
            # A file object's write says no path; the caller (and the user) needs it.
            error = OSError(error.errno, error.strerror or str(error), str(self.path))
        if self._failing != error.errno:
            self._failing = error.errno
            logger.error('cannot %s the journal: %s', what, describe_os_error(error))
        return error

    def close(self) -> None:
        """Write what is queued, fsync it, then close the file; later writes fail."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._writer.join()
        with self._cv:
            while self._busy:
                self._cv.wait()
        if self._syncer is not None:
            with self._sync_cv:
                self._sync_cv.notify()
            self._syncer.join()
        try:
            self._file.close()
        except OSError as e:
            # The lines a full disk refused are still buffered; their callers were told.
            self._failed('close', e)


def encode(result: CallResult) -> bytes:
    """One journal line: the result as a JSON object, newline-terminated.

    Values JSON cannot hold (sets, custom objects) are written as their
    ``repr``; a result ``orjson`` rejects (an integer beyond 64 bits) falls
    back to the standard library's encoder, and so does one with NaN or an
    infinity (``orjson`` would write ``null``): the standard library writes
    ``NaN``/``Infinity``, which [`read_journal`][actors.store.journal.read_journal]
    reads back as the same floats, so a resumed result is the one computed.
    """
    try:
        # orjson writes a dataclass's fields itself, in order: no to_dict() copy.
        line = orjson.dumps(
            result,
            default=repr,
            option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS,
        )
    except TypeError:
        return (json.dumps(result.to_dict(), default=repr) + '\n').encode()
    # Only a line with a null can hide a NaN: most results skip the walk.
    if b'null' in line and _has_non_finite(result.value):
        return (json.dumps(result.to_dict(), default=repr) + '\n').encode()
    return line


def _has_non_finite(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds a float NaN or infinity (within 64 levels)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if depth > 64:
        return False
    if isinstance(value, dict):
        return any(_has_non_finite(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v, depth + 1) for v in value)
    return False


def read_journal(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every record in one journal, oldest first.

    A line that is not a whole record is skipped with a warning that names
    it: a line cut short by a crash mid-write (only ever the last one), bytes
    that are not UTF-8, or anything that is not a JSON object. The records
    around it are all read.
    """
    try:
        data = pathlib.Path(path).read_bytes()
    except FileNotFoundError:
        return
    for number, line in enumerate(data.split(b'\n'), 1):
        if not line.strip():
            continue
        record = _decode(line)
        if record is None:
            logger.warning(
                '%s:%d is not a complete record (%d bytes); ignoring it', path, number, len(line)
            )
            continue
        yield record


def _decode(line: bytes) -> dict[str, Any] | None:
    """One journal line as a record, or ``None`` if it is not a whole one."""
    try:
        record = json.loads(line.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def recover_tail(path: str | os.PathLike[str]) -> int:
    """Make a journal end with a whole line before anything is appended to it.

    A crash, a full disk or a truncated copy can leave the last line torn:
    the next record appended to it would join that line and be unreadable,
    so a result answered to its caller would be missing from the journal.
    A torn tail that is still a whole record just gets its newline; one that
    is not is cut off (it was never answered: callers are answered only
    after their line and its newline are written) and kept beside the
    journal as ``<name>.torn-<unix time>`` for inspection.

    Returns:
        How many bytes were cut off (0 if the journal was whole).

    """
    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, 'rb+') as file:
        file.seek(-1, os.SEEK_END)
        if file.read(1) == b'\n':
            return 0
        # Read back from the end to the last newline: the torn line only.
        start = _last_line_start(file, size)
        file.seek(start)
        tail = file.read()
        if _decode(tail) is not None:
            file.write(b'\n')
            logger.warning('%s: its last record had no newline; added one', path)
            return 0
        keep = path.with_name(f'{path.name}.torn-{time.time():.0f}')
        write_private(keep, tail)
        file.truncate(start)
        file.flush()
        os.fsync(file.fileno())
    logger.warning(
        '%s: cut off a torn last line of %d bytes (not a whole record; kept in %s)',
        path,
        len(tail),
        keep,
    )
    return len(tail)


def _last_line_start(file: Any, size: int, chunk: int = 65536) -> int:
    """Offset just after the last newline of ``file`` (0 if it has none)."""
    end = size
    while end > 0:
        begin = max(0, end - chunk)
        file.seek(begin)
        found = file.read(end - begin).rfind(b'\n')
        if found >= 0:
            return begin + found + 1
        end = begin
    return 0


def read_run(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of every Director's journal in a run directory."""
    records: list[dict[str, Any]] = []
    for path in sorted(pathlib.Path(run_dir, JOURNAL_DIR).glob('*.jsonl')):
        records.extend(read_journal(path))
    return records


def final_by_key(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last final record of each call key (see ``FINAL_STATUSES``)."""
    final: dict[str, dict[str, Any]] = {}
    for record in records:
        key = record.get('call_key')
        if key and record.get('status') in FINAL_STATUSES:
            final[key] = record
    return final
