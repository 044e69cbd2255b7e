"""Durable MCP calls: every call is keyed, run once, and answerable after a reconnect or restart.

A call (one tool call, or an ensemble of them) gets a key, chosen by the
client (``call_key``) or made here. The key goes to the Directors with the
call, so their journals hold its result under that key; the book also
records each submission and each end in ``<run_dir>/mcp/calls.jsonl``.

- A client that disconnects mid-call loses nothing: the call runs on in
  the server, and ``call_result`` (or ``tasks/result``, or the same tool call
  with the same ``call_key``) answers it.
- A server restarted on the same run dir (``launch.py mcp --resume RUN_DIR``)
  reads both: ended calls are answered from the book, calls that had not
  ended are sent again with their keys, and a Director answers a key its
  journal already holds without running the tool again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import pathlib
import time
import uuid
from collections.abc import Mapping
from typing import Any

from actors.common.errors import ConfigurationError
from actors.common.names import director_name
from actors.common.private import open_private
from actors.common.private import private_dir
from actors.common.results import CallResult
from actors.mcp.entry import CANCELLED
from actors.mcp.entry import FAILED
from actors.mcp.entry import Entry
from actors.mcp.entry import ensemble_state
from actors.mcp.entry import state_of
from actors.mcp.entry import summary
from actors.mcp.front import Front
from actors.mcp.jsonsafe import dumps
from actors.mcp.jsonsafe import json_safe
from actors.mcp.outputs import ENSEMBLE_RESULTS
from actors.mcp.outputs import TOOL_VALUE
from actors.mcp.outputs import Outputs
from actors.store.journal import final_by_key
from actors.store.journal import read_run

logger = logging.getLogger(__name__)

CHUNKS_PER_DIRECTOR = 8
"""An ensemble goes out in about this many batches per Director: one batch per
Director would be cheapest, but progress then moves in few large steps."""


class CallBook:
    """Every durable call of one server, kept in memory and in ``<run_dir>/mcp/calls.jsonl``.

    Args:
        front: The Directors the calls run on.
        outputs: Where values too large to inline go.

    """

    def __init__(self, front: Front, outputs: Outputs) -> None:
        self.front = front
        self.outputs = outputs
        self.path = pathlib.Path(front.run_dir, 'mcp', 'calls.jsonl')
        self.entries: dict[str, Entry] = {}
        self._journaled: dict[str, dict[str, Any]] = {}
        self._log: Any = None

    # Opening and closing.

    def open(self) -> int:
        """Read what an earlier server recorded; send again the calls that had not ended.

        Returns:
            How many unfinished calls were sent again.

        """
        private_dir(self.path.parent)
        self._journaled = final_by_key(read_run(self.front.run_dir))
        for record in _read_log(self.path):
            key = record.get('key')
            if record.get('event') == 'submit' and isinstance(key, str):
                self.entries[key] = Entry(
                    key=key,
                    tool=record['tool'],
                    arguments=record['arguments'],
                    ensemble=bool(record.get('ensemble')),
                    timeout=record.get('timeout'),
                    created=record.get('created', time.time()),
                    total=len(record['arguments']) if record.get('ensemble') else 1,
                )
            elif record.get('event') == 'end' and key in self.entries:
                entry = self.entries[key]
                for name in ('state', 'done', 'message', 'result', 'updated', 'directors'):
                    if name in record:
                        setattr(entry, name, record[name])
        self._log = open_private(self.path, 'ab')
        resent = [e for e in self.entries.values() if not e.ended]
        for entry in resent:
            logger.info('sending %s again (it had not ended when the server stopped)', entry.key)
            self._start(entry)
        return len(resent)

    async def close(self) -> None:
        """Stop following the calls (they run on in the Directors) and close the book."""
        tasks = [e._task for e in self.entries.values() if e._task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._log is not None:
            self._log.close()
            self._log = None

    # Calls.

    def submit(
        self,
        tool: str,
        arguments: Any,
        *,
        ensemble: bool = False,
        call_key: str | None = None,
        timeout: float | None = None,
    ) -> Entry:
        """Start a call (arguments already validated), or return the one with the same key.

        Raises:
            ConfigurationError: If ``call_key`` was used for another call, is
                not text (a lone surrogate), or the call cannot be recorded.

        """
        _check_writable(tool, call_key, arguments)
        if call_key is not None and call_key in self.entries:
            entry = self.entries[call_key]
            if not entry.same_call(tool, arguments, ensemble):
                raise ConfigurationError(
                    f'call_key {call_key!r} already names another call ({entry.view()["tool"]} '
                    f'with {_short(entry.arguments)}); give a new call_key, or the same '
                    'tool and arguments to get that call',
                )
            return entry
        if call_key is not None:
            self._check_not_a_member(call_key, ensemble)
        key = call_key or f'mcp-{uuid.uuid4().hex[:16]}'
        entry = Entry(
            key=key,
            tool=tool,
            arguments=list(arguments) if ensemble else dict(arguments),
            ensemble=ensemble,
            timeout=timeout,
            total=len(arguments) if ensemble else 1,
            message='submitted',
        )
        record = {
            'event': 'submit',
            'key': key,
            'tool': tool,
            'ensemble': ensemble,
            'arguments': entry.arguments,
            'timeout': timeout,
            'created': entry.created,
        }
        try:
            # Only what can be written is kept: a call the book cannot record
            # would be one that tasks/list, call_status... could not answer.
            line = dumps(record)
        except (TypeError, ValueError) as e:
            raise ConfigurationError(
                f'{tool}: the call cannot be recorded as JSON ({str(e)[:120]}); '
                'send arguments that are JSON text and numbers',
            ) from None
        self.entries[key] = entry
        self._write_line(key, line)
        self._start(entry)
        return entry

    def _check_not_a_member(self, call_key: str, ensemble: bool) -> None:
        """Refuse a key an ensemble's calls share (call i of ensemble E is keyed ``E/i``).

        The Directors answer a key from their journals: a call keyed ``E/0``
        would get call 0 of ensemble ``E``'s result, whatever its arguments.

        Raises:
            ConfigurationError: If ``call_key`` is ``E/<i>`` of an ensemble
                ``E``, or (for an ensemble) some call is keyed ``<call_key>/<i>``.

        """
        parent, _, index = call_key.rpartition('/')
        owner = self.entries.get(parent)
        if index.isdigit() and owner is not None and owner.ensemble:
            clash = f'it is the key of call {index} of ensemble {parent!r}'
        elif ensemble and any(
            k.startswith(f'{call_key}/') and k[len(call_key) + 1 :].isdigit() for k in self.entries
        ):
            clash = f'calls keyed {call_key!r}/<i> exist, and its calls would take those keys'
        else:
            return
        raise ConfigurationError(f'call_key {call_key!r}: {clash}; give another call_key')

    def get(self, call_key: str) -> Entry:
        """The call with this key.

        Raises:
            ConfigurationError: If no call has it.

        """
        entry = self.entries.get(call_key)
        if entry is None:
            recent = ', '.join(list(self.entries)[-5:]) or 'none yet'
            raise ConfigurationError(
                f'no call has call_key {call_key!r} on this run (recent keys: {recent})',
            )
        return entry

    async def cancel(self, call_key: str) -> Entry:
        """Stop a call on its Directors; its result then says cancelled.

        Raises:
            ConfigurationError: If no call has the key.

        """
        entry = self.get(call_key)
        if entry.ended:
            return entry
        entry.touch(message='cancelling')
        stops = [
            self.front.cancel(i, prefix=entry.key)
            if entry.ensemble
            else self.front.cancel(i, call_key=entry.key)
            for i in sorted(set(entry.directors))
        ]
        if not stops and entry._task is not None:
            entry._task.cancel()  # Not sent anywhere yet: nothing runs.
        await asyncio.gather(*stops)
        return entry

    # Running.

    def _start(self, entry: Entry) -> None:
        entry._task = asyncio.get_running_loop().create_task(self._run(entry))

    async def _run(self, entry: Entry) -> None:
        try:
            if entry.ensemble:
                result = await self._run_ensemble(entry)
                state = ensemble_state(result['counts'])
            else:
                result = await self._run_tool(entry)
                state = state_of(result['status'])
            self._end(entry, state, result, summary(entry, result))
        except asyncio.CancelledError:
            if entry.message == 'cancelling':
                self._end(entry, CANCELLED, None, 'cancelled before it was sent')
            raise
        except ConfigurationError as e:
            self._end(entry, FAILED, None, str(e))
        except Exception as e:
            logger.warning('call %s: %s: %s', entry.key, type(e).__name__, e)
            self._end(
                entry,
                FAILED,
                None,
                f'{type(e).__name__}: {e} (what finished is in the journals; send the '
                f'same call_key again once the Directors are back)',
            )

    def _on_route(self, entry: Entry) -> Any:
        def routed(index: int) -> None:
            entry.directors.append(index)
            entry.touch(message=f'sent to {director_name(index)}')

        return routed

    async def _run_tool(self, entry: Entry) -> dict[str, Any]:
        record = self._journaled.get(entry.key)
        if record is not None:
            result = CallResult.from_dict(record)
        else:
            result = await self.front.dispatcher.run_tool(
                entry.tool,
                entry.arguments,
                call_key=entry.key,
                timeout=entry.timeout,
                on_route=self._on_route(entry),
            )
        entry.done = 1
        return self.structured(result)

    async def _run_ensemble(self, entry: Entry) -> dict[str, Any]:
        total = entry.total
        keys = [f'{entry.key}/{i}' for i in range(total)]
        results: list[CallResult | None] = [
            CallResult.from_dict(self._journaled[k]) if k in self._journaled else None for k in keys
        ]
        todo = [i for i, r in enumerate(results) if r is None]
        entry.touch(done=total - len(todo))
        size = max(1, math.ceil(len(todo) / (CHUNKS_PER_DIRECTOR * len(self.front.handles))))
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]

        async def run_chunk(indexes: list[int]) -> None:
            answers = await self.front.dispatcher.run_batch(
                entry.tool,
                [entry.arguments[i] for i in indexes],
                call_keys=[keys[i] for i in indexes],
                timeout=entry.timeout,
                on_route=self._on_route(entry),
            )
            for i, answer in zip(indexes, answers, strict=True):
                results[i] = answer
            entry.touch(
                done=entry.done + len(indexes), message=f'{entry.done + len(indexes)}/{total} done'
            )

        await asyncio.gather(*(run_chunk(c) for c in chunks))
        structured = [self.structured(r) for r in results if r is not None]
        counts = collections.Counter(r['status'] for r in structured)
        inline, reference = self.outputs.inline_or_link(ENSEMBLE_RESULTS, entry.key, structured)
        return {
            'call_key': entry.key,
            'tool': entry.tool,
            'total': total,
            'counts': dict(counts),
            'results': inline,
            'results_ref': reference,
        }

    def structured(self, result: CallResult) -> dict[str, Any]:
        """A call's result as ``structuredContent`` (``CALL_RESULT_SCHEMA``).

        What JSON cannot hold (NaN, infinities, lone surrogates...) is written
        as a string and listed in ``replaced`` ([`json_safe`][actors.mcp.jsonsafe.json_safe]):
        the result says what the tool returned, not ``null``.
        """
        raw = {
            'call_key': result.call_key or '',
            'call_id': result.call_id,
            'status': result.status or ('ok' if result.ok else 'failed'),
            'ok': result.ok,
            'tool': result.tool,
            'director': result.director,
            'partition': result.partition,
            'node': result.node,
            'nodes': result.nodes,
            'start': result.start,
            'end': result.end,
            'wall_time': result.wall_time,
            'attempts': result.attempts,
            'params': result.params,
            'value': result.value,
            'value_ref': None,
            'error_type': result.error_type,
            'error_message': result.error_message,
            'resources': result.resources,
        }
        structured, replaced = json_safe(raw)
        # A key names the call's output; a call without one (never from the book) has its id.
        key = result.call_key or f'id:{result.call_id}'
        value, reference = self.outputs.inline_or_link(TOOL_VALUE, key, structured['value'])
        structured.update(value=value, value_ref=reference, replaced=replaced)
        return structured

    def _end(self, entry: Entry, state: str, result: dict[str, Any] | None, message: str) -> None:
        message = json_safe(message)[0]  # an error's text may hold a lone surrogate
        entry.touch(state=state, result=result, message=message, done=entry.total)
        self._write(
            {
                'event': 'end',
                'key': entry.key,
                'state': state,
                'done': entry.done,
                'message': message,
                'result': result,
                'updated': entry.updated,
                'directors': entry.directors,
            },
        )

    def _write(self, record: Mapping[str, Any]) -> None:
        try:
            line = dumps(record)
        except (TypeError, ValueError) as e:
            # The Directors' journals still hold every result under its key.
            logger.warning('could not record %s in %s: %s', record.get('key'), self.path, e)
            return
        self._write_line(record.get('key'), line)

    def _write_line(self, key: Any, line: bytes) -> None:
        if self._log is None:
            return
        try:
            self._log.write(line + b'\n')
            self._log.flush()
        except OSError as e:
            logger.warning('could not record %s in %s: %s', key, self.path, e)


def _read_log(path: pathlib.Path) -> list[dict[str, Any]]:
    """The book's records; a torn or garbled line (a crash mid-write) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_bytes().splitlines():
        try:
            # json, not orjson: an integer beyond 64 bits reads back as itself, not a float.
            record = json.loads(line)
        except ValueError:
            logger.warning('skipping a garbled line of %s', path)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _check_writable(tool: str, call_key: str | None, arguments: Any) -> None:
    """Refuse a call the book could not record as it is, nor a reply quote.

    Raises:
        ConfigurationError: If the key is not text (a lone surrogate), or the
            arguments hold what JSON cannot (NaN would be recorded as null).

    """
    if call_key is not None and json_safe(call_key)[1]:
        shown = json.dumps(call_key)[:60]
        raise ConfigurationError(
            f'call_key {shown} is not text (it holds a lone UTF-16 surrogate); give a key of '
            'letters, digits and punctuation',
        )
    replaced = json_safe(arguments)[1]
    if replaced:
        raise ConfigurationError(
            f'{tool}: arguments hold what JSON cannot: '
            + '; '.join(note.split(', written')[0] for note in replaced[:3])[:200]
        )


def _short(value: Any, limit: int = 120) -> str:
    text = dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 3] + '...'
