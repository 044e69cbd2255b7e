"""Files and directories private to the user, whatever the umask.

A run directory sits on a shared file system: its journals, manifest,
control files, submit scripts and the lean-imports package that every Parsl
process imports must not be readable or writable by other users (a writable
package there is code execution for anyone). Modes are set explicitly
(``chmod`` after creation), not left to the umask.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import secrets
import stat
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
    """Write ``data`` to ``path`` atomically (a reader sees all of it or the old file).

    As ``write_private_at`` in ``path``'s directory: the part file has a
    random name and is made new (so two threads writing one file never rename
    each other's part, and nothing planted under a guessable name is written
    through); a symlink planted at ``path`` is replaced, never followed.
    """
    path = pathlib.Path(path)
    raw = data.encode() if isinstance(data, str) else data
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_private_at(folder, path.name, raw, mode=mode)
    finally:
        os.close(folder)


def open_dir_at(parent: int | None, name: str, *, create: bool = False) -> int:
    """A descriptor of directory ``name`` (in the one open as ``parent``), never via a symlink.

    With ``create``, a missing directory is made private (0700). The caller
    closes the descriptor.

    Raises:
        NotADirectoryError: If ``name`` is a symbolic link or not a directory.
        OSError: If it cannot be opened (or made).

    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, DIR_MODE, dir_fd=parent)
    try:
        return os.open(name, flags, dir_fd=parent)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotADirectoryError(
                e.errno, 'a symbolic link or not a directory (never followed)', name
            ) from None
        raise


def write_private_at(folder: int, name: str, data: bytes, *, mode: int = FILE_MODE) -> None:
    """Write ``name`` in the directory open as ``folder`` atomically, following no symlink.

    The part file is new (``O_EXCL | O_NOFOLLOW``, a random name): nothing
    planted under its name is written through. The rename then replaces
    ``name`` itself, a symlink planted there included, never its target.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(8):
        part = f'.{name}.{secrets.token_hex(8)}.part'
        try:
            descriptor = os.open(part, flags, mode, dir_fd=folder)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(errno.EEXIST, 'no free name for a part file', name)
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, 'wb') as file:
            file.write(data)
        os.replace(part, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part, dir_fd=folder)
        raise


def read_regular_at(folder: int, name: str) -> bytes:
    """The bytes of regular file ``name`` in the directory open as ``folder``, never via a symlink.

    Raises:
        FileNotFoundError: If there is no such file.
        PermissionError: If ``name`` is a symbolic link or not a regular file
            (a FIFO is not waited on: it is opened non-blocking and refused).

    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(name, flags, dir_fd=folder)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise PermissionError(e.errno, 'a symbolic link (never followed)', name) from None
        raise
    with os.fdopen(descriptor, 'rb') as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise PermissionError(errno.EPERM, 'not a regular file', name)
        return file.read()
