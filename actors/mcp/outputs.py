"""Large outputs by reference: written under the run dir, returned as a resource link.

A trajectory inlined into a tool result lands in the model's context window;
above ``limit`` bytes (of JSON) a value is written to
``<run_dir>/mcp/outputs/<name>.json`` (private to the user) and the result
carries its ``hpc://outputs/<name>`` URI instead, which the client reads with
``resources/read`` when it needs the data.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
from typing import Any

import orjson

from actors.common.private import private_dir
from actors.common.private import write_private

SCHEME = 'hpc'
OUTPUTS_URI = f'{SCHEME}://outputs/'
DEFAULT_LIMIT = 16 * 1024
"""Bytes of JSON a value may take inline (``launch.py mcp --inline-limit``)."""

_SAFE = re.compile(r'[^A-Za-z0-9_.-]+')


class Outputs:
    """Writes values above ``limit`` bytes under ``<run_dir>/mcp/outputs`` and reads them back.

    Args:
        run_dir: The run directory.
        limit: Bytes of JSON a value may take inline.

    """

    def __init__(self, run_dir: str, limit: int = DEFAULT_LIMIT) -> None:
        self.folder = pathlib.Path(run_dir, 'mcp', 'outputs')
        self.limit = limit

    def inline_or_link(self, name: str, value: Any) -> tuple[Any, dict[str, Any] | None]:
        """``(value, None)`` if it is small; ``(None, reference)`` once it is written out.

        The reference is ``{"uri", "name", "bytes", "mimeType"}``.
        """
        data = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
        if len(data) <= self.limit:
            return value, None
        file_name = _file_name(name)
        private_dir(self.folder)
        write_private(self.folder / file_name, data)
        reference = {
            'uri': OUTPUTS_URI + file_name,
            'name': file_name,
            'bytes': len(data),
            'mimeType': 'application/json',
        }
        return None, reference

    def names(self) -> list[str]:
        """Files written so far."""
        if not self.folder.is_dir():
            return []
        return sorted(p.name for p in self.folder.iterdir() if p.suffix == '.json')

    def read(self, uri: str) -> bytes:
        """The bytes behind an ``hpc://outputs/<name>`` URI.

        Raises:
            KeyError: If the URI does not name an output of this run.

        """
        name = uri.removeprefix(OUTPUTS_URI)
        if not uri.startswith(OUTPUTS_URI) or name != _file_name_safe(name):
            raise KeyError(f'{uri!r} is not an output of this run (expected {OUTPUTS_URI}<name>)')
        path = self.folder / name
        if not path.is_file():
            raise KeyError(f'{uri!r}: no such output (have: {", ".join(self.names()) or "none"})')
        return path.read_bytes()


def _file_name(name: str) -> str:
    """A file name from a call key: readable, and unique even after unsafe characters go."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f'{_SAFE.sub("_", name)[:80]}-{digest}.json'


def _file_name_safe(name: str) -> str:
    """``name`` with anything that could leave the outputs folder replaced."""
    cleaned = _SAFE.sub('_', name)
    return '' if cleaned.startswith('.') else cleaned
