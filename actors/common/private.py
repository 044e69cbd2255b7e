"""Files and directories private to the user, whatever the umask.

A run directory sits on a shared file system: its journals, manifest,
control files, submit scripts and the lean-imports package that every Parsl
process imports must not be readable or writable by other users (a writable
package there is code execution for anyone). Modes are set explicitly
(``chmod`` after creation), not left to the umask.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import threading
from typing import IO
from typing import Any

DIR_MODE = 0o700
FILE_MODE = 0o600
EXEC_MODE = 0o700


def private_dir(path: str | os.PathLike[str]) -> pathlib.Path:
    """Create ``path`` (and missing parents) as directories only the user can use.

    Existing parents are left alone (they may be the user's home or a
    project directory); directories created here, and ``path`` itself, get
    mode 0700.
    """
    path = pathlib.Path(path)
    missing = []
    for each in (path, *path.parents):
        if each.exists():
            break
        missing.append(each)
    path.mkdir(parents=True, exist_ok=True)
    for each in missing:
        with contextlib.suppress(OSError):
            os.chmod(each, DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def open_private(path: str | os.PathLike[str], mode: str = 'ab') -> IO[Any]:
    """Open ``path`` (``'ab'``, ``'wb'``, ``'a'``, ``'w'``) as a file only the user can read."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if 'a' in mode else os.O_TRUNC)
    descriptor = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(descriptor, FILE_MODE)
        return os.fdopen(descriptor, mode)
    except BaseException:
        os.close(descriptor)
        raise


def write_private(
    path: str | os.PathLike[str], data: bytes | str, *, mode: int = FILE_MODE
) -> None:
    """Write ``data`` to ``path`` atomically (a reader sees all of it or the old file)."""
    path = pathlib.Path(path)
    # A name of this writer's own: two threads writing the same file (blocks
    # starting while a DFK is replaced) must not rename each other's part.
    part = path.with_name(f'.{path.name}.{os.getpid()}.{threading.get_ident()}.part')
    raw = data.encode() if isinstance(data, str) else data
    descriptor = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, 'wb') as file:
            file.write(raw)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    os.replace(part, path)
