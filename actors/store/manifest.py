"""The run manifest: what a run started, so later commands can find it.

``launch.py`` writes ``<run_dir>/manifest.json`` once the Directors are up:
the exchange they listen on, the site, each partition with its Director's
Academy agent ID, and the options the Directors run with. Commands that
re-attach to a run (``status``, ``--resume``) read it back.

The exchange's credential is not in it: a Redis URL is recorded without its
password, and ``exchange_needs_password`` says that one must be given again
to join the exchange (``$HPC_TOOL_CALLING_EXCHANGE_PASSWORD``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
import urllib.parse
import uuid
from typing import Any

from academy.identifier import AgentId

from actors.common.errors import ConfigurationError
from actors.common.private import write_private
from actors.job.partition import Partition

MANIFEST_NAME = 'manifest.json'


@dataclasses.dataclass
class DirectorEntry:
    """One Director of a run.

    Attributes:
        partition: The Director's partition.
        agent_uid: The Director's Academy agent ID (UUID as text).
        name: The Director's name, e.g. ``director-0``.

    """

    partition: Partition
    agent_uid: str
    name: str

    def agent_id(self) -> AgentId[Any]:
        """The Academy agent ID to build a handle from."""
        return AgentId(uid=uuid.UUID(self.agent_uid), name=self.name)


@dataclasses.dataclass
class RunManifest:
    """What a run started and where.

    Attributes:
        run_dir: The run directory (absolute).
        exchange: The exchange spec the Directors use (``local``, a URL, ...).
        site: Site profile name.
        executor: Where the Directors run (``local``, ``process``, ...).
        directors: One entry per partition.
        created: Unix time the manifest was written.
        work: What the client was asked to do (iterations, duration,
            timeout), so ``--resume`` can finish it.
        director: How the Directors ran
            ([`DirectorOptions.to_record`][actors.director.options.DirectorOptions.to_record]),
            so ``--resume`` starts new ones the same way. Empty in manifests
            written before it was recorded (their ``work`` held
            ``workers_per_node``, ``supervise`` and ``journal_sync``).
        exchange_needs_password: Joining ``exchange`` needs a password,
            which is not recorded.

    """

    run_dir: str
    exchange: str
    site: str
    executor: str
    directors: list[DirectorEntry]
    created: float = dataclasses.field(default_factory=time.time)
    work: dict[str, Any] = dataclasses.field(default_factory=dict)
    director: dict[str, Any] = dataclasses.field(default_factory=dict)
    exchange_needs_password: bool = False

    def write(self) -> pathlib.Path:
        """Write atomically to ``<run_dir>/manifest.json``.

        Raises:
            ValueError: If ``exchange`` holds a password (it must not be written).

        """
        if '://' in self.exchange and urllib.parse.urlsplit(self.exchange).password:
            raise ValueError('a manifest records the exchange without its password')
        path = pathlib.Path(self.run_dir, MANIFEST_NAME)
        write_private(path, json.dumps(dataclasses.asdict(self), indent=2))
        return path

    @classmethod
    def read(cls, run_dir: str | os.PathLike[str]) -> RunManifest:
        """Read a run's manifest.

        Raises:
            ConfigurationError: If the run directory has no readable manifest.

        """
        path = pathlib.Path(run_dir, MANIFEST_NAME)
        try:
            data = json.loads(path.read_bytes().decode('utf-8'))
        except FileNotFoundError:
            raise ConfigurationError(
                f'{str(run_dir)!r} has no {MANIFEST_NAME}; give the run directory '
                'that launch.py printed (or passed with --run-dir)',
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ConfigurationError(f'{path} cannot be read: {e}') from None
        try:
            return cls._from_data(data)
        except (TypeError, KeyError, AttributeError, ValueError) as e:
            raise ConfigurationError(
                f'{path} is not a manifest of launch.py ({type(e).__name__}: {e}); '
                'give the run directory that launch.py printed',
            ) from None

    @classmethod
    def _from_data(cls, data: Any) -> RunManifest:
        if not isinstance(data, dict):
            raise TypeError(f'a JSON object was expected, got {type(data).__name__}')
        for name, kind in (('run_dir', str), ('exchange', str), ('site', str), ('executor', str)):
            if not isinstance(data.get(name), kind):
                raise TypeError(f'{name!r} must be a {kind.__name__}, got {data.get(name)!r:.60}')
        for name in ('work', 'director'):
            if not isinstance(data.get(name, {}), dict):
                raise TypeError(f'{name!r} must be an object')
        if not isinstance(data.get('exchange_needs_password', False), bool):
            raise TypeError("'exchange_needs_password' must be true or false")
        directors = [
            DirectorEntry(
                partition=Partition(
                    index=d['partition']['index'],
                    nodes=tuple(d['partition']['nodes']),
                    nodefile=d['partition']['nodefile'],
                ),
                agent_uid=d['agent_uid'],
                name=d['name'],
            )
            for d in data.pop('directors')
        ]
        return cls(directors=directors, **data)
