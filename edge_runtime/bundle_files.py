"""Reading a bundle's files without trusting its folder.

A manifest names files; a tampered bundle can name `../../etc/shadow`, an
absolute path, or ship a symlink to /dev/zero, a FIFO or a directory under a
model's name. Every file the runtime reads from a bundle goes through
`read_bundle_file`: a plain file name (no folder separator, no `..`), opened
relative to the bundle folder without following a symlink and without
blocking (a FIFO would block an ordinary open forever), refused unless fstat
says it is a regular file within its size cap, and read at most cap bytes.
Errors name the file as the bundle does and say nothing about anything
outside the bundle (not even whether it exists, or its size).

Standard library only: it ships to devices.
"""
from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

MAX_MANIFEST_BYTES = 1 << 20  # 1 MiB; the fixture manifests are 4-10 KB
MAX_MODEL_BYTES = 64 << 20  # 64 MiB; this project's models are KBs (a Pi reads the whole file into memory)
# A bundle file's name: letters, digits, '.', '_', '-'; not starting with '.', no folder separator.
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class BundleError(ValueError):
    """A bundle that cannot be trusted; the message names the problem and the file (one line)."""


def check_file_name(name: object, where: str) -> str:
    """A plain file name inside the bundle folder, or a BundleError naming the field `where`."""
    if not isinstance(name, str) or not FILE_NAME.fullmatch(name):
        raise BundleError(f"{where}: file name {short(name)} is not a plain file name inside the bundle "
                          "(letters, digits, '.', '_', '-'; no folder, no '..', no absolute path)")
    return name


def read_bundle_file(folder: str | Path, name: str, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of `folder/name`, a regular file of at most max_bytes; BundleError otherwise.

    `what` says what the file is in messages ("manifest", "model file listed in the manifest").
    """
    folder = Path(folder)
    shown = folder / name
    check_file_name(name, str(shown))
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        raise BundleError(f"{folder}: bundle folder not found") from None
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise BundleError(f"{shown}: {what} is missing") from None
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW on a symlink
            raise BundleError(f"{shown}: {what} is a symlink; a bundle's files must be regular files "
                              "inside its folder") from None
        raise BundleError(f"{shown}: {what} cannot be opened ({os.strerror(e.errno or 0)})") from None
    finally:
        os.close(dir_fd)
    return _read_regular(fd, shown, what, max_bytes)


def read_regular_file(path: str | Path, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of the user's own file at `path` (a symlink is followed: it is theirs to place), if it is a
    regular file of at most max_bytes; BundleError naming it otherwise. Never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise BundleError(f"{path}: {what} not found") from None
    except OSError as e:
        raise BundleError(f"{path}: {what} cannot be opened ({os.strerror(e.errno or 0)})") from None
    return _read_regular(fd, path, what, max_bytes)


def open_regular_file(path: str | Path, what: str = "file"):
    """`path` opened for reading in binary, if it is a regular file (never blocks on a FIFO); BundleError
    naming it otherwise. FileNotFoundError is the caller's (an absent file often means "none yet")."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        _require_regular(os.fstat(fd), path, what)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_regular(fd: int, shown, what: str, max_bytes: int) -> bytes:
    """Read an open fd (closed here) if fstat says it is a regular file within max_bytes."""
    try:
        info = os.fstat(fd)
        _require_regular(info, shown, what)
        if info.st_size > max_bytes:
            raise BundleError(f"{shown}: {what} is larger than the {max_bytes}-byte limit")
        data = _read_at_most(fd, max_bytes + 1)  # a file that grows after fstat is still cut off
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise BundleError(f"{shown}: {what} is larger than the {max_bytes}-byte limit")
    return data


def _require_regular(info: os.stat_result, shown, what: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(f"{shown}: {what} is {_kind(info.st_mode)}, not a regular file")


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, total = [], 0
    while total < limit:
        chunk = os.read(fd, min(1 << 20, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def short(value: object, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters: a one-line message never carries a whole manifest."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clip(text: str, limit: int = 200) -> str:
    """A message cut to `limit` characters, on one line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
