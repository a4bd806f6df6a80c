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
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.service.compact import compact_json as _dumps
from edge_runtime.service.log import log

WAL_NAME = "wal.jsonl"
FORMAT = 2  # 2 added ["c", line] events; a log in a format this runtime does not know is not replayed
FORMATS_READ = (1, 2)
FSYNC_POLICIES = ("batch", "interval", "off")


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
        self.broken = False  # a write failed: nothing more is logged until the next snapshot (see append)
        self.fd: int | None = None
        self._last_fsync = 0.0

    def read(self) -> WalContents:
        """The log as left on disk (nothing if absent); a torn last line is left out (and cut off by open())."""
        contents = WalContents()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return contents
        lines = data.split(b"\n")
        contents.torn = bool(lines[-1])  # after the last newline: a write cut short
        for line in lines[:-1]:
            try:
                record = json.loads(line)
            except ValueError:
                contents.torn = True  # only a cut line can be unparsable (whole lines are written at once)
                break
            if "wal" in record:
                contents.base, contents.bundle_sha256 = int(record["base"]), record.get("bundle_sha256")
                contents.format = record["wal"]
            elif "seq" in record:
                contents.batches.append(record)
            elif "sunk" in record:
                contents.sunk, contents.sink_positions = int(record["sunk"]), record.get("sinks", {})
        return contents

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

    def _header(self, base: int) -> None:
        self._write({"wal": FORMAT, "bundle_sha256": self.identity, "base": base})
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
            self._header(base)
            self.broken = False
        except OSError as e:
            self._break(e, 0)

    def remove(self) -> None:
        """--fresh or a refused snapshot: the log belongs to the state that was thrown away."""
        self.path.unlink(missing_ok=True)

    def _write(self, record: dict) -> None:
        data = (_dumps(record) + "\n").encode()
        done = 0
        while done < len(data):
            done += os.write(self.fd, data[done:])

    def _fsync(self) -> None:
        os.fsync(self.fd)
        self.fsyncs += 1
        self._last_fsync = time.monotonic()
        self.durable_seq = self.seq

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def stats(self) -> dict:
        return {"seq": self.seq, "durable_seq": self.durable_seq, "appended": self.appended, "fsyncs": self.fsyncs,
                "failures": self.failures}
