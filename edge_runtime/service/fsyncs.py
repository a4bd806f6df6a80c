"""Every fsync of a file the service keeps durable, timed (status.json's `fsync`, /metrics' edge_fsync_seconds).

Under fsync = "batch" a batch's forecasts wait for its log record's fsync, on the main thread, so the
disk's slowest fsyncs are the service's slowest samples: the ceiling's p99 at 80% of it was set by a few
fsyncs of 10-56 ms (DESIGN-NOTES, "The service's ceiling"). Counting them where they happen lets a user
(and make bench) tell a slow disk from a slow service.
"""
from __future__ import annotations

import os
import time
from bisect import bisect_left

FSYNC_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)  # upper bounds (le)
SLOW_S = 0.01  # an fsync over this is "slow" in status.json: a batch of forecasts that waited that long


class FsyncClock:
    """One file's fsyncs: how many, their total and longest time, and counts per duration bucket."""

    def __init__(self):
        self.count = 0
        self.seconds = 0.0
        self.longest = 0.0
        self.buckets = [0] * (len(FSYNC_BUCKETS_S) + 1)  # the last: above every bound

    def fsync(self, fd: int) -> None:
        """os.fsync(fd), timed; its OSError goes to the caller (each has its own policy for a failed fsync)."""
        started = time.perf_counter()
        try:
            os.fsync(fd)
        finally:
            took = time.perf_counter() - started
            self.count += 1
            self.seconds += took
            self.longest = max(self.longest, took)
            self.buckets[bisect_left(FSYNC_BUCKETS_S, took)] += 1  # le: a duration equal to a bound is in it

    def slow(self) -> int:
        """fsyncs that took longer than SLOW_S."""
        return sum(self.buckets[bisect_left(FSYNC_BUCKETS_S, SLOW_S) + 1:])

    def stats(self) -> dict:
        return {"count": self.count, "seconds": round(self.seconds, 6), "longest_ms": round(self.longest * 1e3, 3),
                "over_10ms": self.slow()}  # SLOW_S
