"""The write-ahead log: what changed the streams since the last snapshot, so a `kill -9` loses nothing.

File: `<state_dir>/wal.jsonl`, JSON lines, appended with os.write (one
write per batch, so it is in the kernel's page cache, which survives the
process, before anything is acknowledged):

    {"wal": 1, "bundle_sha256": "...", "base": 40}     header: batches after 40 follow
    {"seq": 41, "now": 1700000000.5, "events": [...]}   one batch: what the main thread decided
    {"sunk": 41, "sinks": {"jsonl": [inode, size]}}     batches up to 41 are in every sink

Events, in the order they were applied: ["c", "id,t,v1,..."] an accepted
sample that came as a CSV line, kept as read (printing its numbers again
took 2.6 us a sample, the line 0.5); ["s", id, t, [values...]] any other
accepted sample; ["r", id] a requested reset; ["e", id, "idle"|"full"] an
eviction. `now` is the batch's wall clock (a new stream's last_seen), so a
replay through the same step path rebuilds state, steps and anomaly
trackers exactly. Rejected input is not logged: it changed nothing.

fsync policy (`[wal] fsync`): "batch" fsyncs every batch before its
acknowledgement (survives a power cut; the queue grows while the disk
syncs, so the next batch is larger: a natural group commit); "interval"
fsyncs at most every `fsync_interval_s` and holds acknowledgements until
the fsync that covers them (survives a power cut, fewer fsyncs, later
acknowledgements); "off" never fsyncs (survives a crash of the service,
not of the machine). After a snapshot is durable, the log is cut back to a
header whose base is the snapshot's `wal_seq`.

read() checks every whole line's shape: only the text after the last newline
can be a cut write (see read()), so anything else that is not a record as
written here is a damaged or edited log, a WalError naming the line.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.bundle_files import BundleError, open_regular_file
from edge_runtime.service.compact import compact_json as _dumps
from edge_runtime.service.fsyncs import FsyncClock
from edge_runtime.service.log import log

WAL_NAME = "wal.jsonl"
FORMAT = 2  # 2 added ["c", line] events; a log in a format this runtime does not know is not replayed
FORMATS_READ = (1, 2)
FSYNC_POLICIES = ("batch", "interval", "off")
SEQ_MAX = 2**63 - 1  # a seq, base or sunk beyond this is damage (a batch a microsecond for 292,000 years)
POSITION_MAX = 2**64 - 1  # a sink position's inode and size


class WalError(ValueError):
    """The log on disk is not one this runtime wrote (edited, or damaged in the middle); the message is one
    line naming the file, the line and what is wrong with it."""


HEADER_KEYS, BATCH_KEYS, SUNK_KEYS = {"wal", "bundle_sha256", "base"}, {"seq", "now", "events"}, {"sunk", "sinks"}


def _count(value, top: int = SEQ_MAX) -> bool:
    return type(value) is int and 0 <= value <= top


def _kind(record) -> str | None:
    """"header", "batch" or "sunk" for a record shaped as the writer writes it, else None."""
    if type(record) is not dict:
        return None
    if "seq" in record:  # the most lines: first. now/events are checked as the batch is applied
        seq = record["seq"]
        return "batch" if type(seq) is int and 0 <= seq <= SEQ_MAX and record.keys() <= BATCH_KEYS else None
    if "sunk" in record:
        sinks = record.get("sinks")
        ok = record.keys() == SUNK_KEYS and _count(record["sunk"]) and type(sinks) is dict and all(
            type(name) is str and type(at) is list and len(at) == 2 and all(_count(n, POSITION_MAX) for n in at)
            for name, at in sinks.items())
        return "sunk" if ok else None
    if "wal" in record and record.keys() <= HEADER_KEYS:
        sha = record.get("bundle_sha256")
        ok = type(record["wal"]) is int and (record["wal"] not in FORMATS_READ or (
            _count(record.get("base")) and (sha is None or type(sha) is str)))
        return "header" if ok else None
    return None


@dataclass
class WalContents:
    """What a log on disk holds: its header's base, the batches after it, and the last 'sunk' marker."""

    base: int = 0
    format: int | None = None  # the header's; None: no header (an empty log)
    bundle_sha256: str | None = None
    batches: list = field(default_factory=list)  # dicts {"seq", "now", "events"}, in seq order
    sunk: int = 0  # every batch up to here reached every sink
    sink_positions: dict = field(default_factory=dict)  # sink name -> its position at the last marker
    torn: bool = False  # the last line was cut (a kill -9 mid-write): dropped, never acknowledged


class WriteAheadLog:
    def __init__(self, folder: Path, bundle_sha256: str, fsync: str = "batch", fsync_interval_s: float = 0.05):
        self.path = Path(folder) / WAL_NAME
        self.identity = bundle_sha256
        self.fsync_policy, self.fsync_interval_s = fsync, fsync_interval_s
        self.seq = 0  # the last batch appended
        self.durable_seq = 0  # the last batch that would survive a power cut under the policy
        self.fsyncs = self.appended = self.failures = 0
        self.fsync_clock = FsyncClock()
        self.broken = False  # a write failed: nothing more is logged until the next snapshot (see append)
        self.fd: int | None = None
        self._last_fsync = 0.0

    def read(self) -> WalContents:
        """The log as left on disk (nothing if absent); a torn last line is left out (and cut off by open()).

        Raises WalError for a log this runtime did not write (edited, or damaged in the middle). Every record
        is written whole, newline last, by one _write() (its loop only continues a partial write, and a failed
        one is cut back in _break()), and the page cache outlives a kill -9: only the text after the last
        newline can be cut short. A whole line that does not parse, or does not hold what the writer writes,
        is damage, not a torn write; skipping it, or stopping there, would drop the acknowledged batches
        after it (and those appended after the next start: open() keeps every whole line). (A power cut can
        leave junk only after the last fsync, on a filesystem that does not write data before the size: an
        error then too, though what it drops was not acknowledged unless fsync = "off".)
        """
        contents = WalContents()
        try:
            with open_regular_file(self.path, "write-ahead log") as f:  # a FIFO here must not hang the start
                data = f.read()
        except FileNotFoundError:
            return contents
        except BundleError as e:
            raise WalError(str(e)) from None
        lines = data.split(b"\n")
        contents.torn = bool(lines[-1])  # after the last newline: a write cut short
        for number, line in enumerate(lines[:-1], 1):
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep for the parser
                raise self._damaged(number, line, "not JSON") from None
            kind = _kind(record)
            if kind is None:
                raise self._damaged(number, line, "not a record this runtime writes")
            if (kind == "header") != (number == 1):
                raise self._damaged(number, line, "a header after the first line" if kind == "header" else
                                    "the first line is not a header")
            if kind == "header":
                contents.format = record["wal"]
                if contents.format not in FORMATS_READ:
                    return contents  # what follows is in a format unknown here: the service says so
                contents.base, contents.bundle_sha256 = record["base"], record.get("bundle_sha256")
            elif kind == "batch":
                last = contents.batches[-1]["seq"] if contents.batches else contents.base
                if record["seq"] <= last:
                    raise self._damaged(number, line, f"seq {record['seq']} after {last}: seqs only increase")
                contents.batches.append(record)  # its now and events: the service checks them as it applies it
            else:
                contents.sunk, contents.sink_positions = record["sunk"], record["sinks"]
        return contents

    def _damaged(self, number: int, line: bytes, why: str) -> WalError:
        shown = line.decode("utf-8", "replace")
        shown = repr(shown[:80] + "..." if len(shown) > 80 else shown)  # escaped: the message stays one line
        return WalError(f"{self.path}: damaged or edited at line {number} ({why}): {shown}")

    def open(self, last_seq: int) -> None:
        """Append from here on; batches are numbered after last_seq. A torn tail is cut off first."""
        self.seq = self.durable_seq = last_seq
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(self.fd).st_size
        if size == 0:
            self._header(last_seq)
            return
        with open(self.path, "rb") as f:
            data = f.read()
        whole = data.rfind(b"\n") + 1
        if whole < size:
            os.ftruncate(self.fd, whole)
        if whole == 0:
            self._header(last_seq)

    def _header(self, base: int, fsync: bool = True) -> None:
        self._write({"wal": FORMAT, "bundle_sha256": self.identity, "base": base})
        if fsync:
            self._fsync()

    def append(self, now: float, events: list) -> int:
        """One batch's events; returns its seq. On disk (page cache) when this returns; fsynced per policy.

        A write or fsync that fails (disk full) is cut back and the log is `broken` until the next durable
        snapshot (cut()): later batches are not written either, since a replay with a hole would be wrong.
        Until then durable_seq stays put, so nothing after it is acknowledged.
        """
        self.seq += 1
        if self.broken:
            return self.seq
        size = os.fstat(self.fd).st_size
        try:
            self._write({"seq": self.seq, "now": now, "events": events})
            self.appended += 1
            if self.fsync_policy == "batch":
                self._fsync()
        except OSError as e:
            self._break(e, size)
            return self.seq
        if self.fsync_policy == "off":
            self.durable_seq = self.seq
        return self.seq

    def _break(self, error: OSError, size: int) -> None:
        self.broken, self.failures = True, self.failures + 1
        log("error", "wal_write_failed", path=str(self.path), error=str(error),
            effect="acknowledgements wait for the next snapshot")
        try:
            os.ftruncate(self.fd, size)
        except OSError:
            pass  # a torn tail is cut off when the log is next opened

    def sync_if_due(self) -> int:
        """For "interval": fsync when the interval has passed and something is not durable. The durable seq."""
        if self.fsync_policy == "interval" and self.durable_seq < self.seq and not self.broken:
            if time.monotonic() - self._last_fsync >= self.fsync_interval_s:
                try:
                    self._fsync()
                except OSError as e:
                    self._break(e, os.fstat(self.fd).st_size)
        return self.durable_seq

    def sync(self) -> None:
        """Make every appended batch durable now (at stop)."""
        if self.durable_seq < self.seq and not self.broken:
            try:
                self._fsync()
            except OSError as e:
                self._break(e, os.fstat(self.fd).st_size)

    def mark_sunk(self, seq: int, sink_positions: dict) -> None:
        """Batches up to seq reached every sink: a replay must not send their records again.

        Not fsynced: lost in a power cut, the replay resends those records and the sink drops the ones it holds.
        """
        if not self.broken:
            try:
                self._write({"sunk": seq, "sinks": sink_positions})
            except OSError as e:
                self._break(e, os.fstat(self.fd).st_size)

    def cut(self, base: int) -> None:
        """After a durable snapshot covering batches up to base: every batch so far is durable (in the
        snapshot), and the log restarts as a header with that base."""
        self.durable_seq = max(self.durable_seq, base)
        try:
            os.ftruncate(self.fd, 0)
            # not fsynced: the next batch's fsync makes the cut durable with it, and until then a power cut leaves
            # the old log (whose batches up to base the replay skips), an empty one or this header: each replays
            # right after the snapshot. One fsync fewer of a snapshot's three on the main thread (~8 ms).
            self._header(base, fsync=False)
            self.broken = False
        except OSError as e:
            self._break(e, 0)

    def set_aside(self) -> Path:
        """A log the start discards: renamed to <name>.discarded (replacing an older one), not deleted."""
        aside = self.path.with_name(self.path.name + ".discarded")
        os.replace(self.path, aside)
        return aside

    def remove(self) -> None:
        """--fresh or a refused snapshot: the log belongs to the state that was thrown away."""
        self.path.unlink(missing_ok=True)

    def _write(self, record: dict) -> None:
        data = (_dumps(record) + "\n").encode()
        done = 0
        while done < len(data):
            done += os.write(self.fd, data[done:])

    def _fsync(self) -> None:
        self.fsync_clock.fsync(self.fd)
        self.fsyncs += 1
        self._last_fsync = time.monotonic()
        self.durable_seq = self.seq

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def stats(self) -> dict:
        return {"seq": self.seq, "durable_seq": self.durable_seq, "appended": self.appended, "fsyncs": self.fsyncs,
                "failures": self.failures, "fsync": self.fsync_clock.stats()}
