"""The service's fsyncs run in a thread of their own (edge_runtime/service/syncer.py), and the fsync policy's
promises hold: a slow disk no longer stops the main thread, yet under fsync = "batch" a batch's forecasts
reach the sink only once its write-ahead log record is durable, and a sample is acknowledged only once its
forecast is durable too.

The disk is made slow by holding the log's fsync (os.fsync wrapped) until the test lets it go. Before the
fsync thread, process() itself waited for that fsync: the first assertion fails there. Were forecasts
written before their log record is durable, a power cut could keep a forecast whose log record it lost,
and the sensor's resent sample would be forecast twice: the second assertion fails there.
"""
from __future__ import annotations

import json
import os
import threading
import time

from conftest import IN_PROCESS_BACKEND
from edge_runtime.service.lines import Sample
from service_helpers import wait_for, write_config

STREAMS = 8


def _service(folder, bundle):
    from edge_runtime.service.config import read_config
    from edge_runtime.service.service import Service
    from edge_runtime.service.sinks import open_sinks
    from edge_runtime.service.syncer import Syncer

    config = write_config(folder, bundle, "[sources.stdin]\n",
                          f'[sinks.jsonl]\npath = "{folder / "state" / "out.jsonl"}"\nrotate_bytes = 0\n',
                          extra=f'backend = "{IN_PROCESS_BACKEND}"\n[wal]\nfsync = "batch"\n')
    service = Service(read_config(config))
    service.sinks = open_sinks(service.config.sinks)
    service.syncer = Syncer(service.wal, service.sinks, service._synced)
    return service


class Disk:
    """os.fsync, with the log's fsyncs held while `hold` is clear; each fsync's file and size, in order."""

    def __init__(self, monkeypatch, wal_path, sink_path):
        self.hold, self.done = threading.Event(), []
        self._fsync, self._paths = os.fsync, {"wal": wal_path, "sink": sink_path}
        monkeypatch.setattr(os, "fsync", self.fsync)

    def _which(self, fd: int) -> str | None:
        inode = os.fstat(fd).st_ino
        return next((name for name, path in self._paths.items() if os.stat(path).st_ino == inode), None)

    def fsync(self, fd: int) -> None:
        which = self._which(fd)
        if which == "wal":
            assert self.hold.wait(60), "the test never let the log's fsync go"
        size = os.fstat(fd).st_size
        self._fsync(fd)
        self.done.append((which, size))

    def durable(self, which: str) -> int:
        """Bytes of the file that the last fsync of it covered."""
        return max([size for name, size in self.done if name == which], default=0)


def test_a_slow_log_fsync_does_not_stop_processing_and_holds_forecasts_and_acknowledgements(
        fixture_bundles, tmp_path, monkeypatch):
    service = _service(tmp_path, fixture_bundles["lstm"][1])
    wal_path, sink_path = service.wal.path, tmp_path / "state" / "out.jsonl"
    disk = Disk(monkeypatch, wal_path, sink_path)
    mean = service.model.manifest.normalization["mean"]
    acked = []  # (stream, t, bytes of the log and of the sink durable when the ack came)

    def sample(stream: int, t: float) -> Sample:
        def ack():
            acked.append((f"s{stream}", t, disk.durable("wal"), disk.durable("sink")))
        return Sample(f"s{stream}", t, tuple(mean), "test", time.perf_counter(), ack)

    try:
        for t in (1.0, 2.0, 3.0):  # three batches while the log's first fsync is held
            worker = threading.Thread(target=service.process, args=([sample(s, t) for s in range(STREAMS)],))
            worker.start()
            worker.join(10.0)
            assert not worker.is_alive(), "process() waited for the log's fsync"
        service._settle()
        assert sink_path.read_bytes() == b"", "forecasts reached the sink before their log record was durable"
        assert acked == [] and service.wal.durable_seq == 0

        disk.hold.set()
        wait_for(lambda: service._settle() or len(acked) == 3 * STREAMS, what="every sample acknowledged")
    finally:
        disk.hold.set()
        service.syncer.stop()
        for sink in service.sinks:
            sink.close()
    lines = sink_path.read_bytes().split(b"\n")[:-1]
    assert len(lines) == 3 * STREAMS
    ends = {}  # (stream, t) -> the byte just past its forecast's line in the sink
    position = 0
    for line in lines:
        position += len(line) + 1
        record = json.loads(line)
        ends[(record["id"], record["t"])] = position
    log = wal_path.read_bytes()
    for stream, t, wal_durable, sink_durable in acked:
        assert sink_durable >= ends[(stream, t)], f"{stream} t={t} acknowledged before its forecast was fsynced"
        record_end = log.index(b"\n", log.index(b'{"seq":%d,' % int(t))) + 1  # batch k holds t = k
        assert wal_durable >= record_end, f"{stream} t={t} acknowledged before its log record was fsynced"
