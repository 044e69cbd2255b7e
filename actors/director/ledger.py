"""The Director's ledger: journal, call keys, counters and throughput.

Everything a Director knows about its calls' results lives here: the journal
they are committed to before anyone is answered, the final results by key
(so that a resent or resumed key is answered without running again), the
keyed calls still running (a twin sent meanwhile shares their answer), the
calls in flight, and the done/failed counts and recent throughput that
``status()`` reports.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import orjson

from actors.common.errors import ConfigurationError
from actors.common.results import CallResult
from actors.director.rate import RateMeter
from actors.store.journal import FINAL_STATUSES
from actors.store.journal import Durable
from actors.store.journal import Journal
from actors.store.journal import SyncMode
from actors.store.journal import final_by_key
from actors.store.journal import journal_path
from actors.store.journal import read_journal


class Ledger:
    """One Director's record of its calls (thread-safe).

    Args:
        name: The Director's name (its journal's file name).
        sync: When journal commits are fsync'ed.

    """

    def __init__(self, name: str, sync: SyncMode) -> None:
        self.name = name
        self.sync = sync
        self.rate = RateMeter()
        self._journal: Journal | None = None
        self._final: dict[str, dict[str, Any]] = {}
        self._keyed: dict[str, Future[CallResult]] = {}
        self._in_flight: set[Future[Any]] = set()
        self._declared: dict[Future[Any], float] = {}
        """Seconds each call in flight declared it takes (its timeout or ``duration``)."""
        self._lock = threading.Lock()
        self._done = 0
        self._failed = 0

    def open(self, run_dir: str) -> None:
        """Read the journal's final results and open it for appending (blocking)."""
        path = journal_path(run_dir, self.name)
        self._final = final_by_key(list(read_journal(path)))
        self._journal = Journal(path, sync=self.sync)

    def close(self) -> None:
        """Commit what is queued and close the journal."""
        if self._journal is not None:
            self._journal.close()

    # Results by key.

    def replayed(self, call_key: str) -> CallResult | None:
        """The journaled final result of ``call_key``, if there is one."""
        record = self._final.get(call_key)
        return None if record is None else CallResult.from_dict(record)

    def check_keys(
        self,
        tool: str | Sequence[str],
        calls: Sequence[Mapping[str, Any]],
        keys: Sequence[str | None],
    ) -> None:
        """Refuse a key whose journaled call had other parameters (or another tool).

        A key answers from the journal without running: a call that reuses
        one with different parameters would get another call's result.

        Raises:
            ConfigurationError: Naming the key and both sets of parameters.

        """
        plain: dict[int, Any] = {}
        for index, key in enumerate(keys):
            record = None if key is None else self._final.get(key)
            if record is None:
                continue
            params = calls[index]
            name = tool if isinstance(tool, str) else tool[index]
            if id(params) not in plain:
                plain[id(params)] = _plain(params)
            if record.get('tool') != name or record.get('params') != plain[id(params)]:
                raise ConfigurationError(
                    f'call key {key!r} was journaled for {record.get("tool")} with '
                    f'{record.get("params")!r:.200}; this call is {name} with '
                    f'{plain[id(params)]!r:.200}. Give a new key, or the same parameters '
                    'to get the journaled result',
                )

    def running(self, call_key: str) -> Future[CallResult] | None:
        """The answer of the running call with ``call_key``, if one runs."""
        with self._lock:
            return self._keyed.get(call_key)

    def claim(self, call_key: str | None, out: Future[CallResult]) -> None:
        """Calls with this key share ``out`` until it is answered."""
        if call_key is not None:
            with self._lock:
                self._keyed[call_key] = out
            out.add_done_callback(lambda _: self._forget(call_key, out))

    def _forget(self, call_key: str, out: Future[CallResult]) -> None:
        with self._lock:
            if self._keyed.get(call_key) is out:
                del self._keyed[call_key]

    def remember(self, result: CallResult) -> None:
        """A journaled final result answers later calls with its key."""
        if result.call_key and result.status in FINAL_STATUSES:
            self._final[result.call_key] = result.to_dict()

    # The journal.

    def write(self, result: CallResult, durable: Durable, *, urgent: bool = True) -> None:
        """Queue ``result`` for the journal; ``durable`` runs once it is committed."""
        assert self._journal is not None, 'the ledger is not open'
        self._journal.write(result, durable, urgent=urgent)

    def flush(self) -> None:
        """Commit what is queued now."""
        if self._journal is not None:
            self._journal.flush()

    def answer(self, result: CallResult, out: Future[CallResult]) -> None:
        """Resolve ``out`` with ``result`` once the journal has committed it."""

        def durable(error: BaseException | None) -> None:
            if error is not None:
                out.set_exception(error)
                return
            self.remember(result)
            out.set_result(result)

        self.write(result, durable)

    # Calls in flight and counters.

    def track(self, future: Future[Any], declared: float | None = None) -> None:
        """A call was submitted (``declared``: the seconds it says it takes, if it does)."""
        with self._lock:
            self._in_flight.add(future)
            if declared is not None:
                self._declared[future] = declared

    def untrack(self, future: Future[Any]) -> None:
        """A call left Parsl without being counted (it runs again, or is counted later)."""
        with self._lock:
            self._in_flight.discard(future)
            self._declared.pop(future, None)

    def settled(self, future: Future[Any], ok: bool) -> None:
        """Count a finished call (for ``status``) and forget it."""
        with self._lock:
            self._in_flight.discard(future)
            self._declared.pop(future, None)
            if ok:
                self._done += 1
            else:
                self._failed += 1
        self.rate.record()

    def in_flight(self) -> list[Future[Any]]:
        """The calls submitted and not yet finished."""
        with self._lock:
            return list(self._in_flight)

    def counts(self) -> tuple[int, int, int]:
        """Calls in flight, done and failed."""
        with self._lock:
            return len(self._in_flight), self._done, self._failed

    def report(self) -> LedgerReport:
        """Its counts and recent throughput now."""
        in_flight, done, failed = self.counts()
        with self._lock:
            declared = list(self._declared.values())
        mean = sum(declared) / len(declared) if declared else None
        return LedgerReport(in_flight, done, failed, self.rate.rate(), self.rate.window, mean)


@dataclasses.dataclass(frozen=True)
class LedgerReport:
    """A Director's calls, counted (for its ``status`` and ``node_load``).

    Attributes:
        in_flight: Calls submitted and not finished.
        done: Calls that finished successfully.
        failed: Calls that finished with an error.
        throughput: Calls finished per second over the last ``window`` seconds.
        window: Seconds ``throughput`` is measured over.
        mean_declared: Mean seconds the calls in flight declare they take
            (``None``: none declares it).

    """

    in_flight: int
    done: int
    failed: int
    throughput: float
    window: float
    mean_declared: float | None = None


def _plain(params: Mapping[str, Any]) -> Any:
    """``params`` as the journal holds them (a JSON round trip, as ``encode`` writes them)."""
    return orjson.loads(orjson.dumps(dict(params), default=repr, option=orjson.OPT_NON_STR_KEYS))
