"""FsyncClock (edge_runtime/service/fsyncs.py): every fsync counted, timed and put in its duration bucket, the
slow ones counted apart, and a failed fsync counted and raised as it was. Durations come from a scripted clock."""
from __future__ import annotations

import errno
import os

import pytest

from edge_runtime.service import fsyncs
from edge_runtime.service.fsyncs import FSYNC_BUCKETS_S, FsyncClock


def test_buckets_longest_and_slow_count_follow_the_durations(monkeypatch):
    durations = [0.0004, 0.01, 0.0101, 2.0]  # s: the first bucket, exactly a bound (le), just past it, past all
    ticks = iter(t for d in durations for t in (0.0, d))  # from 0: the differences are the durations exactly
    monkeypatch.setattr(fsyncs.time, "perf_counter", lambda: next(ticks))
    synced = []
    monkeypatch.setattr(os, "fsync", synced.append)
    clock = FsyncClock()
    for _ in durations:
        clock.fsync(7)
    assert synced == [7, 7, 7, 7]
    assert clock.buckets[0] == 1 and clock.buckets[FSYNC_BUCKETS_S.index(0.01)] == 1
    assert clock.buckets[FSYNC_BUCKETS_S.index(0.025)] == 1 and clock.buckets[-1] == 1 and sum(clock.buckets) == 4
    assert clock.stats() == {"count": 4, "seconds": pytest.approx(2.0205), "longest_ms": 2000.0, "over_10ms": 2}


def test_a_failed_fsync_is_counted_and_raised(monkeypatch):
    def fail(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    clock = FsyncClock()
    with pytest.raises(OSError, match="Input/output error"):
        clock.fsync(3)
    assert clock.count == 1 and sum(clock.buckets) == 1


def test_a_real_fsync_of_a_file_is_timed(tmp_path):
    clock = FsyncClock()
    with open(tmp_path / "f", "wb") as f:
        f.write(b"x" * 4096)
        f.flush()
        clock.fsync(f.fileno())
    assert clock.count == 1 and clock.seconds > 0 and clock.longest == clock.seconds
