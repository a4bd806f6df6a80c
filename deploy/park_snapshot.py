"""Keep each bundle's snapshot apart in the service's state folder: the device side of `deploy.device.restart`.

Its text goes over ssh on stdin to the release's own python, run as root; the folder and the served bundle's
sha256 are arguments, never shell text:

    sudo /opt/edge-rnn/current/venv/bin/python - /var/lib/edge-rnn <served sha256> < park_snapshot.py

The state folder belongs to the service user, so everything inside it is the service's to craft: the
snapshot's bundle identity, and whether `snapshot.npz` or `snapshots/` are files, folders or symlinks. So
every name used here is either a constant or a checked sha256, every file is opened relative to a folder
descriptor with O_NOFOLLOW (a symlink is refused, never followed out of the folder), only regular files
are read or moved, and a move is a rename(2) between those two descriptors (a rename never follows a link).

    snapshot.npz of another bundle  -> snapshots/<its sha256>.npz
    snapshots/<served sha256>.npz   -> snapshot.npz  (when there is none): a rollback resumes its streams

Anything else (an unreadable snapshot, an identity that is not a sha256, a symlink) is left where it is and
said on stderr; the service then decides (it refuses another bundle's snapshot and starts without one that
it cannot read). Only the release's numpy and edge_runtime are used: any release's venv can run it.
"""
from __future__ import annotations

import os
import re
import stat
import sys

from edge_runtime.service.snapshot import SNAPSHOT_NAME, SnapshotError, read_snapshot

PARKED = "snapshots"
SHA256 = re.compile(r"[0-9a-f]{64}")
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted under the name returns at once instead of waiting for a writer
OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def regular_file(name: str, folder: int) -> bool:
    """`name` in the folder is a regular file itself (not a symlink to one)."""
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def exists(name: str, folder: int) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def snapshot_identity(state: int) -> str | None:
    """The bundle sha256 the snapshot was taken with; None when there is no readable regular snapshot."""
    try:
        fd = os.open(SNAPSHOT_NAME, OPEN_FILE, dir_fd=state)
    except FileNotFoundError:
        return None
    except OSError as e:  # ELOOP: a symlink
        say(f"{SNAPSHOT_NAME} cannot be opened without following a link ({e.strerror}): left in place")
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            say(f"{SNAPSHOT_NAME} is not a regular file: left in place")
            return None
        try:
            meta = read_snapshot(f)[0]
        except (SnapshotError, OSError) as e:
            say(f"{SNAPSHOT_NAME} is unreadable ({str(e)[-200:]}): left in place")
            return None
    identity = meta.get("bundle_sha256")
    if not isinstance(identity, str) or not SHA256.fullmatch(identity):
        say(f"{SNAPSHOT_NAME} names bundle {str(identity)[:80]!r}, which is not a sha256: left in place")
        return None
    return identity


def parked_folder(state: int, create: bool) -> int | None:
    """A descriptor of snapshots/ (made when missing and `create`); None when absent or not a real folder."""
    if create and not exists(PARKED, state):
        os.mkdir(PARKED, 0o755, dir_fd=state)
    try:
        return os.open(PARKED, OPEN_DIR, dir_fd=state)
    except FileNotFoundError:
        return None
    except OSError as e:  # ELOOP or ENOTDIR: a symlink or a file in its place
        say(f"{PARKED}/ is not a folder of its own ({e.strerror}): nothing parked or restored")
        return None


def park_and_restore(state_dir: str, served: str) -> None:
    try:
        state = os.open(state_dir, OPEN_DIR)
    except FileNotFoundError:
        return  # the service never ran here: nothing to keep
    try:
        identity = snapshot_identity(state)
        if identity is not None and identity != served:
            parked = parked_folder(state, create=True)
            if parked is not None:
                os.rename(SNAPSHOT_NAME, f"{identity}.npz", src_dir_fd=state, dst_dir_fd=parked)
                os.close(parked)
                say(f"parked the snapshot of bundle {identity[:12]}")
        if not exists(SNAPSHOT_NAME, state):
            parked = parked_folder(state, create=False)
            if parked is not None:
                if regular_file(f"{served}.npz", parked):
                    os.rename(f"{served}.npz", SNAPSHOT_NAME, src_dir_fd=parked, dst_dir_fd=state)
                    say(f"restored the parked snapshot of bundle {served[:12]}")
                os.close(parked)
    finally:
        os.close(state)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        say("usage: park_snapshot.py STATE_DIR SERVED_BUNDLE_SHA256")
        return 2
    state_dir, served = argv
    if not os.path.isabs(state_dir):
        say(f"state folder {state_dir!r} is not an absolute path")
        return 2
    if not SHA256.fullmatch(served):
        say(f"served bundle {served[:80]!r} is not a sha256: snapshots left as they are")
        return 0
    park_and_restore(state_dir, served)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
