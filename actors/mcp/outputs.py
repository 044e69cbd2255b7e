"""Large outputs by reference: written under the run dir, returned as a resource link.

A trajectory inlined into a tool result lands in the model's context window;
above ``limit`` bytes (of JSON) a value is written to
``<run_dir>/mcp/outputs/<name>.json`` (private to the user) and the result
carries its ``hpc://outputs/<name>`` URI instead, which the client reads with
``resources/read`` when it needs the data.

Names cannot collide: a name is ``<kind>-<readable key>-<digest>.json``, the
digest over the JSON of ``[kind, key]`` (a tool's value, an ensemble's
results: the ensemble ``E`` and a call keyed ``E-results`` get different
files). Nothing is followed through a symbolic link: ``mcp`` and
``mcp/outputs`` are opened with ``O_NOFOLLOW`` (a link there is refused),
files are read with ``O_NOFOLLOW`` and written through a new part file
(``O_EXCL | O_NOFOLLOW``) renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pathlib
import re
from collections.abc import Iterator
from typing import Any

from actors.common.errors import ConfigurationError
from actors.common.private import open_dir_at
from actors.common.private import read_regular_at
from actors.common.private import write_private_at
from actors.mcp.jsonsafe import dumps

logger = logging.getLogger(__name__)

SCHEME = 'hpc'
OUTPUTS_URI = f'{SCHEME}://outputs/'
DEFAULT_LIMIT = 16 * 1024
"""Bytes of JSON a value may take inline (``launch.py mcp --inline-limit``)."""

TOOL_VALUE = 'value'
"""Kind of output: one tool call's value (keyed by its call key)."""
ENSEMBLE_RESULTS = 'results'
"""Kind of output: an ensemble's results (keyed by the ensemble's key)."""

_SAFE = re.compile(r'[^A-Za-z0-9_.-]+')
_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]*\.json')


class Outputs:
    """Writes values above ``limit`` bytes under ``<run_dir>/mcp/outputs`` and reads them back.

    Args:
        run_dir: The run directory.
        limit: Bytes of JSON a value may take inline.

    """

    def __init__(self, run_dir: str, limit: int = DEFAULT_LIMIT) -> None:
        self.run_dir = pathlib.Path(run_dir)
        self.folder = self.run_dir / 'mcp' / 'outputs'
        self.limit = limit

    def inline_or_link(self, kind: str, key: str, value: Any) -> tuple[Any, dict[str, Any] | None]:
        """``(value, None)`` if it is small; ``(None, reference)`` once it is written out.

        ``kind`` (``TOOL_VALUE``, ``ENSEMBLE_RESULTS``) and ``key`` name the
        file; no other pair names the same one. The reference is
        ``{"uri", "name", "bytes", "mimeType"}``.

        Raises:
            ConfigurationError: If ``mcp`` or ``mcp/outputs`` in the run dir is
                a symbolic link (or not a directory).

        """
        data = dumps(value)
        if len(data) <= self.limit:
            return value, None
        file_name = file_name_of(kind, key)
        with self._opened(create=True) as folder:
            assert folder is not None
            write_private_at(folder, file_name, data)
        reference = {
            'uri': OUTPUTS_URI + file_name,
            'name': file_name,
            'bytes': len(data),
            'mimeType': 'application/json',
        }
        return None, reference

    def names(self) -> list[str]:
        """Outputs written so far (regular files only: a link planted there is not listed)."""
        try:
            with self._opened(create=False) as folder:
                if folder is None:
                    return []
                with os.scandir(folder) as entries:
                    return sorted(
                        e.name
                        for e in entries
                        if _NAME.fullmatch(e.name) and e.is_file(follow_symlinks=False)
                    )
        except ConfigurationError as e:
            logger.warning('listing no outputs: %s', e)
            return []

    def read(self, uri: str) -> bytes:
        """The bytes behind an ``hpc://outputs/<name>`` URI.

        Raises:
            KeyError: If the URI does not name an output of this run (or names
                a symbolic link, or anything but a regular file), or the outputs
                folder is a symbolic link.

        """
        name = uri.removeprefix(OUTPUTS_URI)
        if not uri.startswith(OUTPUTS_URI) or not _NAME.fullmatch(name):
            raise KeyError(
                f'{uri!r:.150} is not an output of this run (expected {OUTPUTS_URI}<name>)'
            )
        with self._opened_for_reading() as folder:
            try:
                if folder is None:
                    raise FileNotFoundError(name)
                return read_regular_at(folder, name)
            except FileNotFoundError:
                have = ', '.join(self.names()[:20]) or 'none'
                raise KeyError(f'{uri!r}: no such output (have: {have})') from None
            except PermissionError as e:
                raise KeyError(f'{uri!r}: not an output of this run: {e.strerror}') from None

    @contextlib.contextmanager
    def _opened_for_reading(self) -> Iterator[int | None]:
        """``_opened`` whose refusal is a ``KeyError`` (what ``resources/read`` reports)."""
        try:
            with self._opened(create=False) as folder:
                yield folder
        except ConfigurationError as e:
            raise KeyError(str(e)) from None

    @contextlib.contextmanager
    def _opened(self, *, create: bool) -> Iterator[int | None]:
        """The outputs folder, open without following a link (None if missing and not ``create``).

        Raises:
            ConfigurationError: If ``mcp`` or ``mcp/outputs`` is a symbolic link
                or not a directory.

        """
        opened: list[int] = []
        try:
            try:
                # The run dir itself may be a link (the user's choice); what is in it may not.
                opened.append(os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
                for part in ('mcp', 'outputs'):
                    opened.append(open_dir_at(opened[-1], part, create=create))
            except FileNotFoundError:
                if create:
                    raise
                yield None
                return
            except NotADirectoryError:
                raise ConfigurationError(
                    f'{self.folder}: {self._what_is_wrong()}; outputs are written only into a '
                    'real directory of the run (move the link away)',
                ) from None
            yield opened[-1]
        finally:
            for descriptor in opened:
                os.close(descriptor)

    def _what_is_wrong(self) -> str:
        for path in (self.run_dir / 'mcp', self.folder):
            if path.is_symlink():
                return f'{path} is a symbolic link (to {os.readlink(path)}), never followed'
        return 'not a directory'


def file_name_of(kind: str, key: str) -> str:
    """The file of ``(kind, key)``: a readable prefix, then a digest no other pair shares.

    The digest is over the JSON of ``[kind, key]`` (an unambiguous encoding),
    so ``("results", "E")`` and ``("value", "E-results")`` differ, as do keys
    that differ only in characters the prefix replaces.
    """
    encoded = json.dumps([kind, key], ensure_ascii=True).encode()
    digest = hashlib.sha256(encoded).hexdigest()[:32]
    return f'{kind}-{_SAFE.sub("_", key)[:60].lstrip(".")}-{digest}.json'
