"""The host each worker pool of an executor registered from.

The interchange's ``MANAGERS`` answer has no host name, but a registering
pool sends one (``platform.node()`` on its node) and the interchange logs the
whole registration (``Registration info for manager b'<id>': {...}``, at the
INFO level it always logs at) before the pool can get a task. ``PoolHosts``
reads those lines from the executor's ``interchange.log``, only the part
written since its last read.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

_REGISTRATION = re.compile(r"Registration info for manager b'([^']+)': .*'hostname': '([^']*)'")


class PoolHosts:
    """Manager ID -> the host it registered from, for one executor at a time."""

    def __init__(self) -> None:
        self._log: pathlib.Path | None = None
        self._offset = 0
        self._hosts: dict[str, str] = {}

    def of(self, executor: Any) -> dict[str, str]:
        """Every pool registered with ``executor``'s interchange so far, and its host.

        A new executor (a replaced DFK) starts the table afresh.
        """
        log = pathlib.Path(executor.logdir, 'interchange.log')
        if log != self._log:
            self._log, self._offset, self._hosts = log, 0, {}
        try:
            with log.open('rb') as stream:
                stream.seek(self._offset)
                data = stream.read()
        except OSError:
            return self._hosts
        whole = data[: data.rfind(b'\n') + 1]  # a line still being written waits
        self._offset += len(whole)
        for manager, host in _REGISTRATION.findall(whole.decode(errors='replace')):
            self._hosts[manager] = host
        return self._hosts
