"""Durable call results: one JSON-lines journal per Director.

Every finished call is appended to ``<run_dir>/journal/<director-name>.jsonl``
as one line holding ``CallResult.to_dict()``, flushed (and by default
fsync'ed) before the caller is answered. A killed client, Director or node
therefore loses no finished result, and ``launch.py --resume`` reads the
journals back to skip what is done.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import threading
from collections.abc import Iterable
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

from actors.results import CallResult

logger = logging.getLogger(__name__)

JOURNAL_DIR = 'journal'

FINAL_STATUSES = frozenset({'ok', 'failed', 'timed_out'})
"""Outcomes that a resumed run keeps; any other outcome (``lost``,
``cancelled``, ``refused``) is run again."""


def journal_path(run_dir: str | os.PathLike[str], director: str) -> pathlib.Path:
    """Where ``director``'s journal lives in ``run_dir``."""
    return pathlib.Path(run_dir, JOURNAL_DIR, f'{director}.jsonl')


class Journal:
    """Append-only JSON-lines file of one Director's finished calls.

    Writes go through one writer thread that commits whatever has queued up
    with a single flush (and fsync): under load many results share one
    fsync, and a result is durable when its future resolves.

    Args:
        path: The journal file; created (with its directory) if missing.
        fsync: Also ``os.fsync`` each commit, so a node crash (not only a
            process crash) keeps it.

    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._file = open(self.path, 'a', encoding='utf-8')
        self._queue: list[tuple[CallResult, Future[None]]] = []
        self._cv = threading.Condition()
        self._closing = False
        self._writer = threading.Thread(target=self._write_loop, name='journal', daemon=True)
        self._writer.start()

    def submit(self, result: CallResult) -> Future[None]:
        """Queue a result; the future resolves once it is on disk."""
        future: Future[None] = Future()
        with self._cv:
            if self._closing:
                future.set_exception(RuntimeError(f'journal {self.path} is closed'))
                return future
            # Encoded on the writer thread: the caller is Parsl's result callback.
            self._queue.append((result, future))
            self._cv.notify()
        return future

    def append(self, results: Iterable[CallResult]) -> None:
        """Append results and return once they are on disk."""
        for future in [self.submit(r) for r in results]:
            future.result()

    def _write_loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
            try:
                self._file.write(
                    ''.join(json.dumps(r.to_dict(), default=repr) + '\n' for r, _ in batch),
                )
                self._file.flush()
                if self.fsync:
                    os.fsync(self._file.fileno())
            except Exception as e:
                logger.exception('cannot write journal %s', self.path)
                for _, future in batch:
                    future.set_exception(e)
            else:
                for _, future in batch:
                    future.set_result(None)

    def close(self) -> None:
        """Write what is queued, then close the file; later submits fail."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._writer.join()
        self._file.close()


def read_journal(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every record in one journal, oldest first.

    A line cut short by a crash mid-write (only ever the last one) is skipped.
    """
    try:
        text = pathlib.Path(path).read_text(encoding='utf-8')
    except FileNotFoundError:
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            logger.warning('%s:%d is not a complete record; ignoring it', path, number)


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
