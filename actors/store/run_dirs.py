"""Where a new run's files go: a fresh directory, private to the user and locked for the run.

``launch.py`` (and ``launch.py mcp``) take ``--run-dir`` as given, or a new
``runs/<YYYYmmdd-HHMMSS>`` (with ``-2``, ``-3``... for runs started in the same
second); either way the directory must not already hold a run, must be
writable, and is locked for this process (``actors.store.run_lock``).
"""

from __future__ import annotations

import os
import pathlib
import time

from actors.common.errors import ConfigurationError
from actors.common.private import private_dir
from actors.store.journal import JOURNAL_DIR
from actors.store.manifest import MANIFEST_NAME
from actors.store.run_lock import RunDirInUseError
from actors.store.run_lock import holds
from actors.store.run_lock import lock_run_dir


def fresh_run_dir(root: str | pathlib.Path = 'runs') -> pathlib.Path:
    """A new ``<root>/<YYYYmmdd-HHMMSS>[-N]`` run directory, locked for this process.

    Runs started in the same second (an MCP host that starts a server per tool
    call) each get their own: a directory another process holds, or that holds
    a run, is passed over for the next suffix.
    """
    stamp = time.strftime('%Y%m%d-%H%M%S')
    for attempt in range(1, 1000):
        candidate = pathlib.Path(root, stamp if attempt == 1 else f'{stamp}-{attempt}')
        if (
            holds(candidate)
            or (candidate / MANIFEST_NAME).exists()
            or (candidate / JOURNAL_DIR).exists()
        ):
            continue
        try:
            return new_run_dir(candidate)
        except RunDirInUseError:
            continue
    raise ConfigurationError(f'no free run directory under {root}/{stamp}; give --run-dir')


def new_run_dir(path: str | pathlib.Path) -> pathlib.Path:
    """Create a run directory private to the user; refuse one that holds a run.

    Raises:
        ConfigurationError: If ``path`` is a file, cannot be written, or
            already holds a run (its journals would answer the new calls).

    """
    run_dir = pathlib.Path(path).resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigurationError(f'--run-dir {str(path)!r} is a file; give a directory')
    held = [name for name in (MANIFEST_NAME, JOURNAL_DIR) if (run_dir / name).exists()]
    if held:
        raise ConfigurationError(
            f'--run-dir {str(path)!r} already holds a run ({", ".join(held)}); '
            f'give --resume {str(path)!r} to finish it, or a new directory',
        )
    try:
        private_dir(run_dir)
        # A name of this process's own: two runs may probe the same directory at once.
        probe = run_dir / f'.write-test.{os.getpid()}'
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ConfigurationError(
            f'--run-dir {str(path)!r} cannot be written ({e.strerror}); '
            'give a directory you can write to',
        ) from None
    # Two runs started in the same second would otherwise both take runs/<second>.
    lock_run_dir(run_dir)
    return run_dir
