"""fsync in a thread of its own: the write-ahead log and the sinks' files are made durable while the main
thread goes on with the next batches (a group commit).

On the main thread an fsync stopped everything: at 80% of the ceiling most took under 4 ms, but one in a
few hundred took 10-56 ms, the queue grew behind it, and draining it with a fifth of the core to spare put
60-110 ms into the p99 of sample-to-forecast latency (docs/DESIGN-NOTES.md, session 17).

The promises stay those of the fsync policy (wal.py). Under "batch" a batch's records reach the sinks only
once its log record is durable, as before: a forecast on disk without its log record would be written
again when the sensor resends the unacknowledged sample after a power cut. A sample is acknowledged once
its forecast is durable too. Under "interval" this thread fsyncs at most once per interval.

Only this thread writes `log_seq`, `log_failed` and the sinks' `synced`; the main thread reads them (an int
or a reference: one store), adopts them (Service._durable_seq), and alone changes the log's `durable_seq`.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable


class Syncer:
    def __init__(self, wal, sinks: list, on_progress: Callable[[], None]):
        self._wal, self._sinks, self._on_progress = wal, sinks, on_progress
        self._interval_s = wal.fsync_interval_s if wal.fsync_policy == "interval" else 0.0
        self.log_seq = wal.durable_seq  # every batch up to it fsynced by this thread
        self.log_failed: OSError | None = None  # an fsync of the log failed: no more until resume_log()
        self.log_fsyncs = 0
        self._lock = threading.Lock()  # log_failed and the generation: a failure and a resume do not cross
        self._generation = 0
        self._asked, self._stopping = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-fsync", daemon=True)
        self._thread.start()

    def ask(self) -> None:
        """Something was written: make it durable soon (one round covers everything written by then)."""
        self._asked.set()

    def resume_log(self) -> None:
        """The log was cut after a durable snapshot (and is whole again): fsync it again from here on."""
        with self._lock:
            self.log_failed, self._generation = None, self._generation + 1

    def stop(self) -> None:
        self._stopping.set()
        self._asked.set()
        self._thread.join()

    def _run(self) -> None:
        last = 0.0
        while True:
            self._asked.wait()
            if self._stopping.is_set():
                return
            wait = last + self._interval_s - time.monotonic()
            if wait > 0 and self._stopping.wait(wait):  # "interval": at most one round per interval
                return
            self._asked.clear()  # before the round: what is written during it asks for the next one
            last = time.monotonic()
            self._sync_log()
            for sink in self._sinks:
                sink.sync_written()
            self._on_progress()

    def _sync_log(self) -> None:
        wal = self._wal
        with self._lock:
            if self.log_failed is not None:
                return  # after a failed fsync a later one can succeed without the lost pages: trust none
            generation, seq = self._generation, wal.written_seq
        if seq <= self.log_seq:
            return
        try:
            os.fsync(wal.fd)  # opened before this thread starts, closed after it stops
            failed = None
        except OSError as e:
            failed = e
        with self._lock:
            if generation != self._generation:
                return  # the log was cut meanwhile: the snapshot made these batches durable
            if failed is not None:
                self.log_failed = failed
            else:
                self.log_fsyncs += 1
                self.log_seq = max(self.log_seq, seq)
