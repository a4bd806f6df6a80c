"""The user's own words: words they typed and accepted that the bundle's lexicon lacks.

A small JSON file, least recently used first:

    {"format": 1, "words": ["oldest", ..., "newest"]}

Every change rewrites it atomically (a temporary file beside it, fsync,
rename, fsync of the folder), so a crash or `kill -9` mid-write leaves the
old file or the new one, never half of one. At `capacity` words the least
recently used goes first. Standard library only: it ships to devices.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from edge_runtime.bundle_files import BundleError, read_regular_file

USER_WORDS_FORMAT = 1
DEFAULT_CAPACITY = 1000  # words; a few tens of KB on disk
MAX_WORD_LETTERS = 48  # longer "words" are pasted text, not vocabulary
MIN_FILE_CAP = 4 << 20  # bytes; a file of `capacity` words is far smaller, and a larger one is not ours to load


def is_word(word: object) -> bool:
    """What the dictionary holds: 1-48 printable characters, no space. A file edited by hand (or by someone
    else) may hold anything; a terminal escape sequence must never come back as a suggestion."""
    return (isinstance(word, str) and 0 < len(word) <= MAX_WORD_LETTERS and word.isprintable()
            and not any(c.isspace() for c in word))


def file_cap(capacity: int) -> int:
    """The largest user dictionary file read: `capacity` words of the longest UTF-8, with room to spare."""
    return max(MIN_FILE_CAP, 64 + capacity * (4 * MAX_WORD_LETTERS + 3))


class UserWordsError(ValueError):
    """A user dictionary file that cannot be read; the message names the file."""


def default_path() -> Path:
    """$XDG_DATA_HOME/edge-rnn/user-words.json (~/.local/share/... when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "edge-rnn" / "user-words.json"


def write_atomically(path: Path, data: bytes) -> None:
    """Old contents or new, never a mix: temp file in the same folder, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


class UserWords:
    """An LRU set of words kept in a file; `use(word)` adds or refreshes it and saves."""

    def __init__(self, path: str | Path | None = None, capacity: int = DEFAULT_CAPACITY):
        if capacity < 1:
            raise ValueError(f"user dictionary capacity must be at least 1, got {capacity}")
        self.path = Path(path) if path is not None else None  # None: in memory only
        self.capacity = capacity
        self._words: dict[str, None] = dict.fromkeys(self._read())  # insertion order = least recent first
        self.version = 0  # bumped on every change, so a cached index knows to rebuild

    def _read(self) -> list[str]:
        if self.path is None or not self.path.exists():
            return []
        try:
            d = json.loads(read_regular_file(self.path, file_cap(self.capacity), "user dictionary"))
            words = d["words"]
            if d.get("format") != USER_WORDS_FORMAT or not isinstance(words, list):
                raise ValueError("unexpected format")
        except BundleError as e:
            raise UserWordsError(f"{e}; move it away to start a new one") from None
        except (ValueError, KeyError, TypeError) as e:
            raise UserWordsError(f"{self.path}: not a user dictionary ({e}); move it away to start a new one") from None
        return [word for word in words if is_word(word)][-self.capacity:]  # anything else was never ours to keep

    def __contains__(self, word: str) -> bool:
        return word in self._words

    def __len__(self) -> int:
        return len(self._words)

    @property
    def words(self) -> list[str]:
        """Least recently used first."""
        return list(self._words)

    def use(self, word: str) -> None:
        """The user accepted `word`: add it (or make it the most recent) and save."""
        if not is_word(word):
            return
        self._words.pop(word, None)
        self._words[word] = None
        while len(self._words) > self.capacity:
            del self._words[next(iter(self._words))]  # the least recently used
        self.version += 1
        self.save()

    def save(self) -> None:
        """Write the file; UserWordsError if it cannot be (a read-only or full disk): the words stay in memory,
        and the file keeps its last good contents."""
        if self.path is not None:
            data = json.dumps({"format": USER_WORDS_FORMAT, "words": list(self._words)}, separators=(",", ":"))
            try:
                write_atomically(self.path, data.encode("utf-8"))
            except OSError as e:
                where = f": {e.filename}" if e.filename and str(e.filename) != str(self.path) else ""
                raise UserWordsError(f"{self.path}: the user dictionary cannot be saved ({e.strerror or e}{where}); "
                                     "words are kept until the program ends") from None
