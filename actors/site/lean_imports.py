"""Keep modules that Parsl's processes never use out of them.

``import parsl`` imports every executor, and ``parsl.executors.globus_compute``
imports ``globus_compute_sdk`` whenever it is installed (Parsl issue #3818).
This package needs the SDK in the client and the Director, so it is installed,
and every interchange, worker pool and worker process of every Director then
loads it too: here ~0.26 s and ~24 MB of memory per process, on the path of a
Director's first result (interchange, then pool, then workers, one after the
other), and on a shared file system hundreds of extra file opens per process.

``shadow_dir`` writes a directory holding one package per shadowed module that
raises ``ImportError`` when imported; put first on ``PYTHONPATH`` of Parsl's
processes (``actors.site.parsl_config``), it makes Parsl take its "not installed"
path for them, exactly as on a machine without the SDK. The Director's own
process is left alone. A tool that needs one of these modules in a worker can
turn this off with ``lean_imports = false`` in its site profile.
"""

from __future__ import annotations

import os
import pathlib

from actors.common.private import private_dir
from actors.common.private import write_private

SHADOWED = ('globus_compute_sdk',)
"""Modules Parsl's processes import on ``import parsl`` but never use for a Director."""

_STUB = (
    '"""Shadow of {name}: kept out of Parsl processes (actors.site.lean_imports)."""\n'
    "raise ImportError('{name} is not loaded in Parsl worker processes "
    "(site profile: lean_imports = false loads it)')\n"
)


def shadow_dir(work_dir: str | os.PathLike[str]) -> pathlib.Path:
    """Write (once) and return the directory that shadows ``SHADOWED`` under ``work_dir``."""
    directory = pathlib.Path(work_dir, 'lean-imports')
    for name in SHADOWED:
        # Written every time, private: every Parsl process imports it, so a
        # copy another user could write would run their code in ours.
        init = directory / name / '__init__.py'
        private_dir(init.parent)
        write_private(init, _STUB.format(name=name))
    return directory


def python_path(directory: pathlib.Path, current: str | None) -> str:
    """``PYTHONPATH`` with ``directory`` first, then ``current`` (if any)."""
    return f'{directory}{os.pathsep}{current}' if current else str(directory)
