"""The service loop: take what the sources queued, step the streams, score, emit, snapshot, report.

One main thread owns the model, the streams and the counters; sources only
read and queue (line sources queue raw lines, parsed when taken: intake.py;
MQTT messages are parsed in their thread). Per loop: take up to a few thousand queued items, cut them
into rounds in which each stream appears at most once (rounds.py: a stream's
k-th sample of the take joins round k, so its samples stay in order), advance
each round with one `StreamPool.step_rows` call, hand the records to the
sinks, then acknowledge MQTT messages.

Time policy, per stream, on the samples' own timestamps:
- t more than `future_horizon_s` ahead of both the wall clock and the
  stream's last accepted t: dropped as `future_timestamp`, never adopted (one
  t of 1e300 would otherwise make every later sample `out_of_order`).
- t equal to the stream's last accepted t: dropped as `duplicate`;
  t before it: dropped as `out_of_order`. Neither reaches the model.
- t more than `max_gap_s` after it: the stream's state is reset (as after a
  cold start; its first sample primes x_prev) and its anomaly tracker too,
  counted in `resets.gap`. The model then re-warms: forecasts flow at once,
  anomaly events wait `warmup_steps` samples (a cold LSTM's first forecasts
  are poor and would raise false alarms).
- a requested reset ({"reset": true}) also forgets the stream's last t, so a
  device whose clock restarted can go on.
Stream ids are bounded and expire: a stream without an accepted sample for
`idle_evict_s` (wall clock, while the service runs) is evicted: its state
row is freed and it leaves the next snapshot. Time the service is down does
not count (a power cut must not cost every stream its state): a restored
stream keeps the idle time it had when the snapshot was written. With `max_streams` full, a new id evicts the least recently used
stream if that one has been silent `evict_when_full_after_s`, else it is
rejected (`stream_limit`). Both are counted in `counters.evicted`.
Values outside a channel's plausible range (mean +/- value_range_std * std
of the bundle's normalization) are rejected by the parser as `out_of_range`:
the state is never fed an absurd value.
"""
from __future__ import annotations

import gc
import itertools
import os
import signal
import sys
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path

import numpy as np

from edge_runtime.anomaly import AnomalySpec, TrackerBank
from edge_runtime.bounds import value_bounds
from edge_runtime.pool import StreamLimitError, StreamPool
from edge_runtime.service.compact import record_lines
from edge_runtime.service.config import ServiceConfig
from edge_runtime.service.lines import REASONS, STREAM_ID, Rejection, Reset, Sample, parse
from edge_runtime.service.intake import Intake
from edge_runtime.service.log import flush_suppressed, log, set_rate_limit
from edge_runtime.service.rounds import Rounds
from edge_runtime.service.sinks import open_sinks, record_key
from edge_runtime.service.snapshot import (SNAPSHOT_NAME, SnapshotError, check_meta, is_finite, read_snapshot,
                                           remove_stale_temps, write_json_atomically, write_snapshot)
from edge_runtime.service.sources import check_fd_budget, raise_fd_limit, start_sources
from edge_runtime.service.wal import FORMATS_READ, WalContents, WalError, WriteAheadLog

STATUS_NAME = "status.json"
TAKE_MAX = 1024  # queued items handled per loop turn (beyond a read's first chunk). A turn's records reach the
# sinks at its end, so after a stall a 4,096-item turn kept every sample of the backlog waiting ~0.1 s: at
# 80% of the ceiling p99 was 55.5/92.8 ms with 4,096 and 35.4/33.4 ms with 1,024 (docs/DESIGN-NOTES.md)


class ServiceError(RuntimeError):
    """The service cannot start (a refused snapshot, a bundle that does not open); the message says why."""


class Percentiles:
    """The last `size` values in a ring (fixed memory however long the service runs)."""

    def __init__(self, size: int = 8192):
        self.values = np.zeros(size, np.float64)
        self.count = 0

    def add(self, value: float) -> None:
        self.values[self.count % len(self.values)] = value
        self.count += 1

    def add_many(self, values: np.ndarray) -> None:
        """add() for each of values (n,), in order: the ring's positions count..count+n-1, written as at most two
        slices (a whole round at a time: an index array per call cost more than the copy)."""
        size = len(self.values)
        if len(values) > size:  # more than a ring's worth: the last ones win, as with add()
            self.count += len(values) - size
            values = values[-size:]
        start, n = self.count % size, len(values)
        first = min(n, size - start)  # up to the ring's end, then on from its start
        self.values[start:start + first] = values[:first]
        self.values[:n - first] = values[first:]
        self.count += n

    def summary(self) -> dict:
        if not self.count:
            return {"p50": None, "p99": None}
        window = self.values[:min(self.count, len(self.values))]
        p50, p99 = np.percentile(window, [50, 99])
        return {"p50": round(float(p50), 1), "p99": round(float(p99), 1)}


class CollectorClock:
    """Time spent in the cyclic garbage collector, per generation, from gc.callbacks: status.json's `gc`, so a
    run at the ceiling says what the collector cost it (a profiler's figure for it is no better than a guess)."""

    def __init__(self):
        self.seconds = [0.0, 0.0, 0.0]  # per generation
        self.longest = 0.0  # the longest single collection, seconds
        # objects found unreachable, per generation: garbage in reference cycles, which reference counting could
        # not free. A steady stream should make next to none; one cycle per sample makes every sample cost a
        # collector's pass (paho's topic matcher did, sources.py)
        self.collected = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        self.seconds[info["generation"]] += took
        self.collected[info["generation"]] += info["collected"]
        self.longest = max(self.longest, took)


class Pending:
    """A processed batch. Its records go to the sinks once its WAL record is durable (`tokens` is None until
    then); its acknowledgements wait until they are in every sink (each sink's settle token), durably."""

    __slots__ = ("seq", "acks", "tokens", "records", "lines", "positions")

    def __init__(self, seq: int, acks: list, records: list, lines: list | None, tokens: list | None = None,
                 positions: dict | None = None):
        self.seq, self.acks, self.tokens, self.records, self.lines = seq, acks, tokens, records, lines
        self.positions = positions  # each sink's position before these records: what the 'sunk' marker keeps


class StreamInfo:
    """What the service keeps per stream besides the model state (which lives in the pool)."""

    __slots__ = ("last_t", "last_seen_unix")

    def __init__(self, seen_unix: float):
        self.last_seen_unix = seen_unix  # wall clock of the last accepted sample: idle eviction, LRU order
        self.last_t: float | None = None


class Service:
    def __init__(self, config: ServiceConfig, fresh: bool = False):
        from edge_runtime.probe import load_probed
        from edge_runtime.tasks import require_task

        self.config = config
        require_task(config.bundle, "forecast", "serve")  # an autocomplete bundle has no sensor streams
        s = config.streams
        # opened and stepped in a child process first: a model that crashes the interpreter is refused at start
        self.model = load_probed(config.bundle, variant=config.variant, backend=config.backend,
                                 trusted_key=config.trusted_key, batched=None if s.batched else False)
        m = self.model.manifest
        self.identity = m.sha256  # of the very manifest bytes the model was loaded from
        self.spec = AnomalySpec.from_manifest(m)
        self.pool = StreamPool(self.model, s.max_streams, batched=None if s.batched else False, max_batch=s.max_batch)
        # row r: the anomaly tracker of the stream in the pool's row r (reset whenever a stream takes the row)
        self.bank = TrackerBank(self.spec, s.max_streams) if self.spec is not None else None
        self.target = np.asarray(m.target)  # (O,) input channels the model forecasts
        # row r: the forecast the pool's row r made for its stream's next sample, if it made one since the
        # stream took the row or was last restarted (a round reads and writes them as two arrays)
        self.forecasts = np.zeros((s.max_streams, m.output.shape[1]), np.float32)  # (S, O)
        self.has_forecast = np.zeros(s.max_streams, bool)  # (S,)
        # row r: samples its stream stepped since the state last (re)started; warm (scored) past warmup_steps
        self.since_reset = np.zeros(s.max_streams, np.int64)  # (S,)
        self.bounds = value_bounds(m.normalization, config.input.value_range_std)  # (C,) of (low, high)
        self.streams: OrderedDict[str, StreamInfo] = OrderedDict()  # least recently seen first
        self.state_dir = Path(config.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.snapshot_path = self.state_dir / SNAPSHOT_NAME
        self.status_path = self.state_dir / STATUS_NAME
        self.started_unix = time.time()
        self.counters = {"samples": 0, "predictions": 0, "anomalies": 0, "rejected": dict.fromkeys(REASONS, 0),
                         "resets": {"gap": 0, "requested": 0}, "evicted": {"idle": 0, "full": 0},
                         "sink_dropped": 0, "batches": 0,
                         "wal": {"replayed_batches": 0, "replayed_samples": 0, "reemitted": 0, "deduplicated": 0}}
        self.step_latency, self.e2e_latency = Percentiles(), Percentiles()
        self.snapshot_info = {"path": str(self.snapshot_path), "written_unix": None, "steps": 0, "streams": 0,
                              "bytes": 0, "duration_s": None}
        self.queue = Intake(config.input.queue_size)
        self.stop = threading.Event()
        self.wake = threading.Event()  # set by a sink's acknowledgement (an MQTT PUBACK): the paused loop resumes
        # a sink at its high-water mark stops the intake (see _loop); status.json shows it under "backpressure"
        self.backpressure = {"paused": False, "sink": None, "reason": None, "since_unix": None, "pauses": 0,
                             "paused_s": 0.0, "max_backlog": 0, "max_unsettled_records": 0}
        self._paused_at: float | None = None  # monotonic start of the current pause
        self._progress_at = time.monotonic()  # the last time a sink's backlog went down (stall_timeout_s)
        self._backlog_seen = 0
        self._unsettled_records = 0  # records of the batches in _pending
        self.sources: list = []
        self.sinks: list = []
        set_rate_limit(config.log.max_per_s)
        set_rate_limit(config.input.log_rejections_per_s, "rejected")
        self._state = "starting"  # -> running -> stopping -> stopped, or -> failed (with self._error)
        self._error: str | None = None
        self._signals = {"stop": False, "usr1": False}
        w = config.wal
        self.wal = WriteAheadLog(self.state_dir, self.identity, w.fsync, w.fsync_interval_s) if w.enabled else None
        self._events: list = []  # what this batch changed, for the WAL (see wal.py); applied already
        self._rounds = Rounds()  # this batch's accepted samples, not stepped yet
        self._out: tuple[list, list | None] = ([], None)  # this batch's records and their JSON texts (or None)
        self._replaying = False  # True while the WAL is replayed: nothing is logged again
        self._pending: deque[Pending] = deque()  # processed batches not yet acknowledged, oldest first
        self._released = 0  # of them, the first this many have their records in the sinks
        self._sunk = (0, {})  # (seq, sink positions) of the last 'sunk' marker: replays start after it
        self._replayed: list[tuple[int, list]] = []  # (seq, records) a replay owes the sinks, sent once they open
        self.monitor, self.web = self._monitor(config), None  # [http]: /metrics and the live page
        self.collector = CollectorClock()
        remove_stale_temps(self.state_dir)
        self._restore(fresh)

    def _monitor(self, config: ServiceConfig):
        if config.http is None:
            return None
        try:
            from edge_runtime.service.metrics import Monitor
        except ImportError as e:
            raise ServiceError(f"{config.path} [http] needs prometheus-client ({e}): install it, or remove [http]") from None
        spec = self.spec
        return Monitor(self.target, spec and spec.threshold, spec and spec.clear_threshold,
                       config.http.max_stream_labels, config.http.history)

    # -- snapshots ------------------------------------------------------------
    def _restore(self, fresh: bool) -> None:
        """Snapshot, then the WAL's batches after it; the log is opened for appending at the end."""
        self._clock_at_stop = 0.0  # the last wall clock the state had seen: the snapshot's, then the log's
        meta = self._restore_snapshot(fresh)
        try:
            self._restore_wal(meta, fresh)
        finally:
            self._skip_downtime()

    def _skip_downtime(self) -> None:
        """Idle time counts while the service runs: a power cut longer than idle_evict_s must not cost every
        stream its state, so the time the service was down is added to every restored stream's last-seen."""
        down = time.time() - self._clock_at_stop if self._clock_at_stop else 0.0
        if down > 0:
            for info in self.streams.values():
                info.last_seen_unix += down

    def _restore_wal(self, meta: dict | None, fresh: bool) -> None:
        if self.wal is None:
            return
        if meta is None and (fresh or self.snapshot_path.exists()):  # state thrown away: so is its log
            self.wal.remove()
        meta = meta or {}
        self._sunk = (int(meta.get("sunk", 0)), meta.get("sink_positions", {}))
        self._replayed = [(int(u["seq"]), u["records"]) for u in meta.get("unsettled", [])
                          if int(u["seq"]) > self._sunk[0]]
        self.wal.open(self._replay_wal(int(meta.get("wal_seq", 0))))

    def _replay_wal(self, snapshot_seq: int) -> int:
        """Apply the log's batches after the snapshot through the same step path; returns the last seq."""
        try:
            contents = self.wal.read()
        except WalError as e:  # left as it is, for whoever looks into it
            raise ServiceError(f"{e}; start with --fresh to drop the state and the log") from None
        if contents.format not in (None, *FORMATS_READ):  # a newer runtime's log: replaying part of it would lose samples
            raise ServiceError(f"{self.wal.path}: write-ahead log format {contents.format!r}, this runtime reads "
                               f"{', '.join(map(str, FORMATS_READ))}; start the runtime that wrote it, or --fresh")
        if contents.bundle_sha256 not in (None, self.identity):
            log("warning", "wal_discarded", path=str(self.wal.path), reason="written with another bundle")
            contents = self._discard_wal()
        elif contents.base > snapshot_seq:  # the snapshot it continues is gone: replaying a tail would be wrong
            log("error", "wal_discarded", path=str(self.wal.path), base=contents.base, snapshot_seq=snapshot_seq,
                reason="the log starts after the snapshot")
            contents = self._discard_wal()
        if contents.sunk > self._sunk[0]:
            self._sunk = (contents.sunk, contents.sink_positions)
            self._replayed = [(seq, records) for seq, records in self._replayed if seq > contents.sunk]
        last = max(snapshot_seq, contents.base)
        self._replaying = True
        try:
            for batch in contents.batches:
                if batch["seq"] <= snapshot_seq:
                    continue  # already in the snapshot (a kill between the snapshot and the log's cut)
                records = self._apply(batch)
                last = batch["seq"]
                self.counters["wal"]["replayed_batches"] += 1
                if last > self._sunk[0] and records:
                    self._replayed.append((last, records))
        finally:
            self._replaying = False
        if contents.batches or contents.torn:
            log("info", "wal_replayed", batches=self.counters["wal"]["replayed_batches"],
                samples=self.counters["wal"]["replayed_samples"], torn_tail=contents.torn, last_seq=last,
                sunk=self._sunk[0], owed_records=sum(len(r) for _, r in self._replayed))
        return last

    def _discard_wal(self) -> WalContents:
        """Set aside (wal.jsonl.discarded, for whoever looks into it), so open() starts a new log under this header:
        appended to, the batches after the discarded ones were discarded with them at the next start (now a
        damaged log: their seqs start again)."""
        aside = self.wal.set_aside()
        log("warning", "wal_set_aside", path=str(aside))
        return WalContents()

    def _apply(self, batch: dict) -> list:
        """One logged batch, event by event, as process() applied it; returns the records it produced."""
        records: list = []
        self._out = (records, None)
        now, events = self._logged_batch(batch)
        self._clock_at_stop = max(self._clock_at_stop, now)
        for event in events:
            kind, stream_id, sample = self._logged_event(event)
            if kind == "s":
                if self._accept(sample, now, self.streams.get(stream_id)):
                    self._rounds.add(sample)  # into the round process() gave it
                    self.counters["wal"]["replayed_samples"] += 1
            elif kind == "r":
                self._reset_requested(stream_id)
            elif kind == "e" and stream_id in self.streams:
                self._evict(stream_id, self.streams[stream_id], event[2], now)
        self._step_rounds()
        return records

    def _logged_batch(self, batch: dict) -> tuple[float, list]:
        now, events = batch.get("now"), batch.get("events")
        # finite, and an int a float can hold (np.isfinite raises TypeError for an int beyond 64 bits)
        if type(now) not in (int, float) or not abs(now) <= sys.float_info.max or type(events) is not list:
            raise ServiceError(f"{self.wal.path}: batch {str(batch.get('seq'))[:20]} is not one this runtime "
                               "wrote (its now or events); start with --fresh to drop the state and the log")
        return float(now), events

    def _logged_event(self, event) -> tuple[str, str, Sample | None]:
        """(kind, stream id, the sample of an "s" or "c" event) of one logged event, checked: a log this runtime
        did not write (edited, or damaged in the middle) stops the start with one line, not a traceback."""
        try:
            kind, stream_id = (event[0], event[1]) if type(event) is list else (None, None)  # a dict: KeyError
            if kind == "c":
                item = parse(stream_id.encode(), self.pool.channels, "wal", time.perf_counter())
                if type(item) is Sample:  # the line passed when it was read (bounds too: they only refuse)
                    return "s", item.stream, item
            elif kind == "s" and STREAM_ID.match(stream_id) and len(event[3]) == self.pool.channels:
                t, values = float(event[2]), tuple(float(v) for v in event[3])
                if np.isfinite((t, *values)).all():  # what the live path accepts
                    return "s", stream_id, Sample(stream_id, t, values, "wal", time.perf_counter())
            elif kind == "r" and STREAM_ID.match(stream_id):
                return "r", stream_id, None
            elif kind == "e" and STREAM_ID.match(stream_id) and event[2] in self.counters["evicted"]:
                return "e", stream_id, None
        except (TypeError, ValueError, IndexError, AttributeError, OverflowError):
            pass
        raise ServiceError(f"{self.wal.path}: a logged event this runtime did not write: {str(event)[:80]}; "
                           "start with --fresh to drop the state and the log")

    def _restore_snapshot(self, fresh: bool) -> dict | None:
        """The snapshot's meta once loaded; None when starting fresh."""
        if fresh or not self.snapshot_path.exists():
            log("info", "fresh_start", reason="--fresh" if fresh else "no snapshot", bundle_sha256=self.identity)
            return None
        try:
            meta, arrays = read_snapshot(self.snapshot_path)
            if meta.get("bundle_sha256") != self.identity:
                raise SnapshotError(
                    f"{self.snapshot_path} was taken with bundle {meta.get('bundle_name')!r} "
                    f"(manifest sha256 {str(meta.get('bundle_sha256'))[:12]}...), not with {self.config.bundle} "
                    f"(sha256 {self.identity[:12]}...); refusing to load another model's state")
            check_meta(self.snapshot_path, meta)  # every field _load and _restore_wal read
            self._load(meta, arrays)
            return meta
        except SnapshotError as e:
            if not self.config.fresh_start:
                raise ServiceError(f"{e}. Set fresh_start = true in the config or pass --fresh to start over") \
                    from None
            log("warning", "snapshot_discarded", reason=str(e), fresh_start=True)
            self._forget_restored()
            return None

    def _forget_restored(self) -> None:
        """Undo a _load that stopped part-way: no stream, and every row as a new stream finds it."""
        self.streams.clear()
        for stream_id in self.pool.ids():
            self.pool.remove(stream_id)
        self.forecasts[:] = 0.0
        self.has_forecast[:] = False
        self.since_reset[:] = 0
        if self.bank is not None:
            for row in range(self.pool.max_streams):
                self.bank.reset(row)
        self.counters["evicted"]["idle"] = 0
        self._clock_at_stop = 0.0

    def _load(self, meta: dict, arrays: dict) -> None:
        names = {s.name: s.shape[1] for s in self.model.manifest.state}
        for name, width in names.items():
            array = arrays.get(f"state.{name}")
            if array is None or array.ndim != 2 or array.shape[1] != width:
                raise SnapshotError(f"{self.snapshot_path}: state {name!r} missing or not {width} wide")
        if len(meta["streams"]) > self.pool.max_streams:
            raise SnapshotError(f"{self.snapshot_path}: {len(meta['streams'])} streams, the limit is "
                                f"{self.pool.max_streams}")
        forecasts = arrays.get("forecast")
        if forecasts is not None and (forecasts.ndim != 2 or forecasts.shape[1] != self.forecasts.shape[1]):
            raise SnapshotError(f"{self.snapshot_path}: forecast is not {self.forecasts.shape[1]} wide")
        written = meta.get("written_unix")
        written = float(written) if is_finite(written) else time.time()
        # a stream already idle idle_evict_s when the snapshot was written is not restored; the others keep
        # their last-seen, moved past the downtime once the log is replayed too (_skip_downtime)
        self._clock_at_stop = max(self._clock_at_stop, written)
        idle = [max(0.0, written - _seen_unix(entry, written)) for entry in meta["streams"]]
        for k in sorted(range(len(idle)), key=idle.__getitem__, reverse=True):  # least recently seen first
            entry = meta["streams"][k]
            stream_id = entry["id"]
            if idle[k] >= self.config.streams.idle_evict_s:  # already idle that long when the snapshot was taken
                self.counters["evicted"]["idle"] += 1
                log("info", "stream_evicted", stream=stream_id, reason="idle", idle_s=round(idle[k], 1),
                    at="restore")
                continue
            self.pool.set_state(stream_id, {n: arrays[f"state.{n}"][k] for n in names}, int(entry["steps"]))
            info = self._new_stream_info(written - idle[k])
            info.last_t = None if entry.get("last_t") is None else float(entry["last_t"])
            row = int(self.pool.rows_of([stream_id])[0])
            self.since_reset[row] = entry["since_reset"]  # a count: check_meta checked every field read here
            if self.bank is not None:
                self.bank.reset(row)
                if entry.get("anomaly") is not None:
                    try:
                        self.bank.load_dict(row, entry["anomaly"])
                    except ValueError as e:  # its shapes: the types were checked
                        raise SnapshotError(f"{self.snapshot_path}: stream {k} ({stream_id!r}): {e}") from None
            self.has_forecast[row] = forecasts is not None and not np.isnan(forecasts[k]).any()
            if self.has_forecast[row]:
                self.forecasts[row] = forecasts[k]
            self.streams[stream_id] = info
            self._heal_restored(stream_id, info)
        self.snapshot_info.update(written_unix=meta.get("written_unix"), steps=self._total_steps(),
                                  streams=len(self.streams))
        log("info", "snapshot_restored", path=str(self.snapshot_path), streams=len(self.streams),
            steps={i: self.pool.steps_of(i) for i in list(self.streams)[:50]}, written_unix=meta.get("written_unix"))

    def _heal_restored(self, stream_id: str, info: StreamInfo) -> None:
        """A snapshot from before the input bounds may hold a NaN state or a t of 1e300 (or NaN): restart that
        stream (state, or clock) instead of carrying the poison across the restart."""
        row = self.pool.rows_of([stream_id])[0]
        if not all(np.isfinite(array[row]).all() for array in self.pool.state.values()) or (
                self.has_forecast[row] and not np.isfinite(self.forecasts[row]).all()):
            self._restart_stream(stream_id, info)
            log("warning", "restored_state_not_finite", stream=stream_id, action="state reset")
        if info.last_t is not None and not -np.inf < info.last_t <= time.time() + self.config.input.future_horizon_s:
            log("warning", "restored_clock_in_future", stream=stream_id, last_t=info.last_t, action="clock reset")
            info.last_t = None

    def _new_stream_info(self, seen_unix: float | None = None) -> StreamInfo:
        return StreamInfo(time.time() if seen_unix is None else seen_unix)

    def _total_steps(self) -> int:
        ids = self.pool.ids()
        return int(self.pool.steps[self.pool.rows_of(ids)].sum()) if ids else 0

    def write_snapshot(self) -> None:
        ids = self.pool.ids()
        rows = self.pool.rows_of(ids)
        forecast = np.where(self.has_forecast[rows][:, None], self.forecasts[rows], np.float32(np.nan))  # (S, O)
        entries = []
        for k, stream_id in enumerate(ids):
            info = self.streams[stream_id]
            entries.append({"id": stream_id, "steps": int(self.pool.steps[rows[k]]), "last_t": info.last_t,
                            "since_reset": int(self.since_reset[rows[k]]), "last_seen_unix": info.last_seen_unix,
                            "anomaly": self.bank.to_dict(int(rows[k])) if self.bank is not None else None})
        arrays = {f"state.{name}": array[rows] for name, array in self.pool.state.items()}
        started, now = time.perf_counter(), time.time()
        meta = {"bundle_sha256": self.identity, "bundle_name": self.model.manifest.name,
                "variant": self.model.variant.name, "written_unix": now, "streams": entries}
        if self.wal is not None:  # the state covers every batch logged so far; records not yet in the sinks ride along
            meta.update(wal_seq=self.wal.seq, sunk=self._sunk[0], sink_positions=self._sunk[1],
                        unsettled=[{"seq": p.seq, "records": p.records} for p in self._pending if p.records]
                        + [{"seq": seq, "records": records} for seq, records in self._replayed])
        try:
            size = write_snapshot(self.snapshot_path, meta, {**arrays, "forecast": forecast})
        except OSError as e:  # disk full or read-only: keep serving, say so, try again next interval
            log("error", "snapshot_failed", path=str(self.snapshot_path), error=str(e))
            return
        if self.wal is not None:
            self.wal.cut(self.wal.seq)  # the snapshot is durable (fsync, rename, folder fsync): the log restarts
            self._events.clear()  # evictions since the last batch: in the snapshot already
        self.snapshot_info.update(written_unix=now, steps=sum(e["steps"] for e in entries), streams=len(entries),
                                  bytes=size, duration_s=round(time.perf_counter() - started, 6))

    # -- the loop -------------------------------------------------------------
    def emit(self, items: list) -> None:
        """Called by source threads with what one read gave them; blocks while the queue is full
        (backpressure), gives up on stop."""
        while items := self.queue.put(items, timeout=0.2):
            if self.stop.is_set():
                return  # not processed: an MQTT message stays unacknowledged and comes back

    def _take(self, timeout: float) -> list:
        return self.queue.take(timeout, TAKE_MAX)

    def process(self, items: list) -> None:
        """Handle queued items in arrival order, then step their rounds (rounds.py); each stream's samples stay
        in order."""
        records, lines, acks = [], [], []
        self._out = (records, lines)
        rounds = self._rounds
        first = rounds.first  # round 0: nearly every sample joins it
        now = time.time()  # one wall clock per batch: logged with it, so a replay decides alike
        streams, logged = self.streams, self.wal is not None
        latest, max_gap = now + self.config.input.future_horizon_s, self.config.streams.max_gap_s
        for item in items:
            if item.ack is not None:
                acks.append(item.ack)
            kind = type(item)  # identity checks: nearly every item is a Sample, and these run once per sample
            if kind is Sample:
                stream = item.stream
                info = streams.get(stream)
                last = None if info is None else info.last_t
                t = item.t
                # a known stream's next sample, after its last t, within the horizon and the gap: what _admit and
                # _accept would conclude, with the same comparisons, changed here in the same way, inline (two
                # calls a sample were a tenth of this loop); anything else takes the full path
                if last is not None and last < t <= latest and not t - last > max_gap:
                    info.last_t, info.last_seen_unix = t, now
                    streams.move_to_end(stream)
                    if logged:
                        self._events.append(["c", item.line] if item.line is not None else
                                            ["s", stream, t, item.values])
                    if stream in first:
                        rounds.add(item)  # the stream came again: into a later round
                    else:
                        first[stream] = item
                elif self._admit(item, now):
                    rounds.add(item)
            elif kind is Rejection:
                self._reject(item.reason, item.detail, item.source)
            elif kind is Reset:
                self._reset_requested(item.stream)
        self._step_rounds()
        self._commit(now, records, lines, acks)

    def _step_rounds(self) -> None:
        """Step every pending round, in order, into this batch's records."""
        records, lines = self._out
        for batch in self._rounds.drain():
            if batch:
                self._step(batch, records, lines)

    def _commit(self, now: float, records: list, lines: list, acks: list) -> None:
        """Log the batch (write-ahead); its records (and their JSON texts) go to the sinks once the log record is
        durable, and its samples are acknowledged once the records are settled in the sinks (_settle)."""
        seq = 0
        if self.wal is not None:
            seq = self.wal.append(now, self._events) if self._events else self.wal.seq
            self._events = []
        self._pending.append(Pending(seq, acks, records, lines))
        self._unsettled_records += len(records)
        self._settle()

    def _sink_positions(self) -> dict:
        return {sink.name: position for sink in self.sinks if (position := sink.position()) is not None}

    def _settle(self) -> None:
        """Hand the sinks the records of every batch whose log record is durable (_release), then acknowledge,
        oldest first, every batch whose records are settled in the sinks."""
        if not self._pending:
            return
        self._release(self.wal.sync_if_due() if self.wal is not None else None)
        ready = 0
        for pending in itertools.islice(self._pending, self._released):
            if not all(sink.settled(token) for sink, token in zip(self.sinks, pending.tokens)):
                break
            ready += 1
        if not ready:
            return
        if self.wal is not None and self.wal.fsync_policy != "off" and any(
                pending.records for pending in itertools.islice(self._pending, ready)):
            if not all([sink.sync() for sink in self.sinks]):  # the forecasts must outlive a power cut too
                return
        done = [self._pending.popleft() for _ in range(ready)]
        self._released -= ready
        self._unsettled_records -= sum(len(pending.records) for pending in done)
        if self.wal is not None and done[-1].seq > self._sunk[0]:
            self._sunk = (done[-1].seq, done[-1].positions)
            self.wal.mark_sunk(*self._sunk)
        for pending in done:
            for ack in pending.acks:  # only now: a crash before this point gets the messages redelivered
                ack()

    def _release(self, durable: int | None) -> None:
        """The records of the batches whose log record is durable (seq up to `durable`; None: no log) go to the
        sinks, in order. Under fsync = "batch" that is at once (append() fsynced); under "interval" at the fsync
        that covers them: a forecast in a sink whose log record a power cut then lost would be made a second
        time from the sensor's resent sample."""
        while self._released < len(self._pending):
            pending = self._pending[self._released]
            if durable is not None and pending.seq > durable:
                return
            pending.positions = self._sink_positions()
            pending.tokens = [sink.write(pending.records, pending.lines) for sink in self.sinks]
            pending.lines = None
            self._released += 1

    def _admit(self, sample: Sample, now: float) -> bool:
        """The live checks (clock, stream limit, order); then _accept. False: rejected and counted."""
        info = self.streams.get(sample.stream)
        if self._too_far_ahead(sample, info, now):
            return False
        if info is None:
            if len(self.streams) >= self.pool.max_streams:
                self._evict_for_room(now)
            if len(self.streams) >= self.pool.max_streams:
                self._reject("stream_limit", f"stream {sample.stream!r} would exceed the limit of "
                             f"{self.pool.max_streams} streams; none silent for "
                             f"{self.config.streams.evict_when_full_after_s:g}s", sample.source)
                return False
        elif info.last_t is not None:
            if sample.t == info.last_t:
                self._reject("duplicate", f"stream {sample.stream} t={sample.t!r} again", sample.source)
                return False
            if sample.t < info.last_t:
                self._reject("out_of_order", f"stream {sample.stream} t={sample.t!r} after t={info.last_t!r}",
                             sample.source)
                return False
        return self._accept(sample, now, info)

    def _accept(self, sample: Sample, now: float, info: StreamInfo | None) -> bool:
        """What an accepted sample changes before its step (a new stream, a gap reset, the clock); logged.
        Shared by the live path and the WAL replay, so both decide alike. `info`: self.streams.get(stream)."""
        if info is None:
            try:
                row = self.pool.add(sample.stream)
            except StreamLimitError as e:  # only a replay over a smaller max_streams gets here
                self._reject("stream_limit", str(e), sample.source)
                return False
            info = self.streams[sample.stream] = self._new_stream_info(now)
            self.has_forecast[row] = False  # the row's last stream may have left its forecast in it
            self.since_reset[row] = 0
            if self.bank is not None:
                self.bank.reset(row)  # the row's last stream may have left an alarm in it
            log("info", "stream_created", stream=sample.stream, source=sample.source, streams=len(self.streams))
        last = info.last_t
        if last is not None and sample.t - last > self.config.streams.max_gap_s:
            self._restart_stream(sample.stream, info)
            self.counters["resets"]["gap"] += 1
            log("info", "gap_reset", stream=sample.stream, gap_s=round(sample.t - last, 3),
                max_gap_s=self.config.streams.max_gap_s)
        info.last_t = sample.t
        info.last_seen_unix = now
        self.streams.move_to_end(sample.stream)  # most recently seen last: the LRU end is the front
        if not self._replaying and self.wal is not None:
            if sample.line is not None:  # a CSV line: logged as read, since printing its floats again costs 5x
                self._events.append(["c", sample.line])
            else:
                self._events.append(["s", sample.stream, sample.t, sample.values])  # a tuple: JSON writes a list
        return True

    def _evict_for_room(self, now: float) -> None:
        """The pool is full: evict the least recently seen stream if it has been silent long enough."""
        stream_id, info = next(iter(self.streams.items()))
        if stream_id not in self._rounds and now - info.last_seen_unix >= self.config.streams.evict_when_full_after_s:
            self._evict(stream_id, info, "full", now)

    def evict_idle(self, now: float) -> None:
        """Evict every stream silent for idle_evict_s; the front of the ordered dict is the least recently seen."""
        limit = now - self.config.streams.idle_evict_s
        while self.streams:
            stream_id, info = next(iter(self.streams.items()))
            if info.last_seen_unix > limit:
                return
            self._evict(stream_id, info, "idle", now)

    def _evict(self, stream_id: str, info: StreamInfo, reason: str, now: float) -> None:
        if stream_id in self._rounds:  # its samples so far meet the state they followed
            self._step_rounds()
        if not self._replaying and self.wal is not None:
            self._events.append(["e", stream_id, reason])
        del self.streams[stream_id]
        self.pool.remove(stream_id)
        self.counters["evicted"][reason] += 1
        log("info", "stream_evicted", stream=stream_id, reason=reason, idle_s=round(now - info.last_seen_unix, 1),
            streams=len(self.streams))

    def _too_far_ahead(self, sample: Sample, info: StreamInfo | None, now: float) -> bool:
        """A t far beyond the stream's clock (now, the batch's wall clock, or its last t if later) is refused,
        not adopted: adopted, it would block the stream."""
        horizon = self.config.input.future_horizon_s
        if sample.t <= now + horizon:  # nearly every sample: one comparison
            return False
        clock = now if info is None or info.last_t is None else max(now, info.last_t)
        if sample.t <= clock + horizon:
            return False
        self._reject("future_timestamp", f"stream {sample.stream} t={sample.t!r} is more than {horizon:g}s "
                     f"ahead of its clock ({clock!r})", sample.source)
        return True

    def _restart_stream(self, stream_id: str, info: StreamInfo) -> None:
        if stream_id in self._rounds:  # its samples so far meet the state they followed
            self._step_rounds()
        self.pool.reset(stream_id)
        row = int(self.pool.rows_of([stream_id])[0])
        self.since_reset[row] = 0
        self.has_forecast[row] = False
        if self.bank is not None:
            self.bank.reset(row)

    def _reset_requested(self, stream_id: str) -> None:
        info = self.streams.get(stream_id)
        if info is not None:
            self._restart_stream(stream_id, info)
            info.last_t = None  # a requested reset also restarts the stream's clock
            if not self._replaying and self.wal is not None:
                self._events.append(["r", stream_id])
            self.counters["resets"]["requested"] += 1
            log("info", "stream_reset", stream=stream_id)

    def _step(self, batch: dict[str, Sample], records: list, lines: list | None = None) -> None:
        """One model call for the round's streams (one sample each); then their residuals against the forecasts
        they had, one anomaly-bank update for the warm ones, and per stream its records (and, given `lines`, the
        records' JSON texts, for the sinks). Whole-round arrays: element for element the same float64/float32
        operations as one stream at a time, without a dozen numpy or Python operations per sample."""
        start = time.perf_counter()
        ids, samples = list(batch), list(batch.values())
        rows = self.pool.rows_of(ids)  # (B,) int64: every stream of the round was added by _accept
        values = np.array([s.values for s in samples], np.float64)  # (B, C)
        new = self.pool.step_rows(rows, values.astype(self.pool.sample_dtype, copy=False))  # (B, O) float32
        done = time.perf_counter()
        call_us = (done - start) * 1e6
        warmup = self.config.streams.warmup_steps
        c = self.counters
        c["batches"] += 1
        residuals: list = [None] * len(ids)
        scores: list = [None] * len(ids)
        events: list = [None] * len(ids)
        since_reset = self.since_reset[rows] + 1  # (B,) rows are distinct: one sample per stream in a round
        self.since_reset[rows] = since_reset
        warm = since_reset > warmup  # (B,) bool
        have = self.has_forecast[rows]  # (B,) bool: a forecast to compare this sample with
        difference = None
        if have.any():
            difference = values[:, self.target] - self.forecasts[rows]  # (B, O) float64 sensor units; rows without: junk
            residuals = difference.tolist() if have.all() else [r if h else None for r, h in zip(difference.tolist(),
                                                                                                  have.tolist())]
            scored = np.flatnonzero(have & warm)  # (K,) positions in the round
            if len(scored) == len(ids) and self.bank is not None:  # a steady round: every stream scored
                scores, events = self.bank.update(rows, difference)
            elif len(scored) and self.bank is not None:
                for k, score, event in zip(scored.tolist(), *self.bank.update(rows[scored], difference[scored])):
                    scores[k], events[k] = score, event
        watched = None  # the live page's forecast for each sample, taken before it is replaced
        if self.monitor is not None:
            watched = np.where(have, self.forecasts[rows, 0], np.nan)  # (B,) float64
        self.forecasts[rows], self.has_forecast[rows] = new, True
        predictions, steps = new.tolist(), self.pool.steps[rows].tolist()
        times = [s.t for s in samples]
        predicted = [{"type": "prediction", "id": i, "t": t, "step": n, "prediction": p, "residual": r, "score": z,
                      "warm": w} for i, t, n, p, r, z, w in zip(ids, times, steps, predictions, residuals, scores,
                                                            warm.tolist())]
        raised = [k for k, event in enumerate(events) if event is not None]  # rounds are quiet
        for before, k in enumerate(raised):
            event, stream_id, t = events[k], ids[k], times[k]
            c["anomalies"] += event == "start"
            predicted.insert(k + before, {"type": "anomaly", "id": stream_id, "t": t, "event": event, "score": scores[k]})
            log("warning" if event == "start" else "info", "anomaly", stream=stream_id, t=t,
                state=event, score=round(scores[k], 3))
        records += predicted  # each anomaly event just before its stream's forecast
        if lines is not None:
            lines += record_lines(predicted, _finite(new, difference, times, scores))
        self.step_latency.add_many(np.full(len(ids), call_us))  # every sample of the round waited for the one call
        e2e_s = np.fromiter((done - s.received for s in samples), np.float64, len(ids))  # (B,)
        self.e2e_latency.add_many(e2e_s * 1e6)
        c["samples"] += len(ids)
        c["predictions"] += len(ids)
        for sink in self.sinks:
            sink.pump()  # a busy turn is many rounds: refill the MQTT window as PUBACKs come, not once a turn
        if self.monitor is not None:
            self.monitor.stepped(ids, np.asarray(times, np.float64), values[:, self.monitor.target0], watched,
                                 np.asarray(scores, np.float64), new[:, 0], [(k, events[k]) for k in raised],
                                 done - start, e2e_s)
        batch.clear()

    def fsync_clocks(self) -> list:
        """[(file, FsyncClock)]: the write-ahead log's and each file sink's timed fsyncs (/metrics)."""
        return ([("wal", self.wal.fsync_clock)] if self.wal is not None else []) + [
            (sink.name, sink.fsync_clock) for sink in self.sinks if sink.fsync_clock is not None]

    def _reject(self, reason: str, detail: str, source: str) -> None:
        self.counters["rejected"][reason] += 1  # exact; the log line is rate-limited per reason (log.py)
        log("warning", "rejected", reason=reason, source=source, detail=detail)

    # -- status ---------------------------------------------------------------
    def refresh_counters(self) -> dict:
        """self.counters with the counts kept by sinks and source threads copied in: every counter in one dict.

        Kept by the main thread: samples, predictions, anomalies, batches, rejected.<reason>,
        resets.{gap,requested}, evicted.{idle,full}, wal.{replayed_batches,replayed_samples,reemitted,
        deduplicated}, unacknowledged_batches. Copied here: wal.{seq,durable_seq,appended,fsyncs,failures}, sink_dropped (all sinks),
        sinks.<kind>.{written,failures,pending,backlog,dropped,rotations,error; mqtt: waiting,inflight,acknowledged,
        refused,connected}, source_restarts.<source>, and with a TCP
        source connections.{open,refused,idle_closed}.
        """
        c = self.counters
        c["sink_dropped"] = sum(s.dropped for s in self.sinks)
        if self.wal is not None:
            c["wal"].update(self.wal.stats())
        c["unacknowledged_batches"] = len(self._pending)
        c["sinks"] = {s.name: s.stats() for s in self.sinks}
        c["source_restarts"] = {s.name: s.restarts for s in self.sources}
        tcp = next((s for s in self.sources if s.name == "tcp"), None)
        if tcp is not None:  # ints written by the TCP thread; reading them here needs no lock
            c["connections"] = {"open": len(tcp.connections), "refused": tcp.refused, "idle_closed": tcp.idle_closed}
        return c

    def status(self) -> dict:
        self.refresh_counters()
        return {"state": self._state, "error": self._error, "pid": os.getpid(), "started_unix": self.started_unix,
                "updated_unix": time.time(),
                "bundle": {"path": str(self.config.bundle), "name": self.model.manifest.name,
                           "variant": self.model.variant.name, "sha256": self.identity,
                           "backend": self.model.backend, "batched": self.pool.batched is not None},
                "streams": len(self.streams), "counters": self.counters,
                "latency_us": self.step_latency.summary(), "e2e_latency_us": self.e2e_latency.summary(),
                "queue": self.queue.qsize(), "snapshot": self.snapshot_info,
                "backpressure": self._backpressure_status(),
                "sources": {s.name: dict(s.info) for s in self.sources},  # a copy: source threads write them
                "http": self.web and self.web.info,
                "gc": {"frozen_objects": gc.get_freeze_count(),
                       "collections": [generation["collections"] for generation in gc.get_stats()],
                       "threshold": list(gc.get_threshold()),
                       "seconds": [round(s, 6) for s in self.collector.seconds],  # per generation, since running
                       "longest_ms": round(self.collector.longest * 1e3, 3),
                       "collected": list(self.collector.collected)}}  # per generation, since running

    def _backpressure_status(self) -> dict:
        bp = dict(self.backpressure)
        if self._paused_at is not None:  # the current pause counts too
            bp["paused_s"] = round(bp["paused_s"] + time.monotonic() - self._paused_at, 3)
        bp["unsettled_records"] = self._unsettled_records
        bp["high_water"] = {sink.name: sink.high_water for sink in self.sinks}
        return bp

    def write_status(self) -> None:
        flush_suppressed()  # "<event>_suppressed" counts go out at least as often as status.json
        try:
            write_json_atomically(self.status_path, self.status())
        except OSError as e:
            log("error", "status_failed", path=str(self.status_path), error=str(e))

    def _on_signal(self, signum, frame) -> None:
        self._signals["usr1" if signum == signal.SIGUSR1 else "stop"] = True

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT, the end of finite inputs (exit 0), or a source that gave up (exit 1)."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(signum, self._on_signal)
        self.write_status()
        try:
            if self.monitor is not None:
                from edge_runtime.service.web import WebServer
                self.web = WebServer(self, self.monitor, self.config.http.host, self.config.http.port).start()
            self._open_ends()
        except Exception as e:  # a port in use, a sink that cannot open: status must not say starting/running
            self._fail(str(e))
            self.stop.set()
            for source in self.sources:
                source.close()
            self.write_status()
            raise
        self._emit_replayed()
        # What is loaded by now (modules, the interpreter, restored streams) lives as long as the process. Out of
        # the cyclic collector's sight, a full collection walks only what the samples make: 19-26 ms -> ~0.4 ms
        # here, and those pauses sat in the p99 of sample-to-forecast latency (docs/DESIGN-NOTES.md).
        gc.freeze()
        # Python's thresholds stay: 20,000 for the young generation cut the collector's share at the ceiling from
        # ~15% to ~0.05%, but under make loadgen's MQTT load the RSS grew 17.9% with it against 5.9% without
        # (docs/DESIGN-NOTES.md, session 15)
        gc.callbacks.append(self.collector)
        self._state = "running"
        log("info", "started", bundle=str(self.config.bundle), variant=self.model.variant.name,
            backend=self.model.backend, batched=self.pool.batched is not None, streams=len(self.streams),
            sources=[s.name for s in self.sources], sinks=list(self.config.sinks), pid=os.getpid())
        try:
            self._loop()
        except Exception as e:  # a bug must stop the service visibly (exit 1), after a final snapshot
            self._fail(f"{type(e).__name__}: {e}"[:500])
        return self.shutdown()

    def _emit_replayed(self) -> None:
        """Records the WAL replay (or the snapshot) owes the sinks: each sink gets those it does not hold yet."""
        if not self._replayed:
            return
        records = [r for _, records in self._replayed for r in records]
        positions = self._sunk[1]
        tokens = []
        for sink in self.sinks:
            held = sink.written_keys(positions.get(sink.name))
            fresh = [r for r in records if record_key(r) not in held]
            self.counters["wal"]["deduplicated"] += len(records) - len(fresh)
            tokens.append(sink.write(fresh))
        self.counters["wal"]["reemitted"] += len(records)
        log("info", "wal_records_sent", records=len(records), deduplicated=self.counters["wal"]["deduplicated"])
        self._pending.append(Pending(self.wal.seq, [], records, None, tokens, self._sink_positions()))
        self._released += 1  # nothing else is pending yet: these records are the first
        self._unsettled_records += len(records)
        self._replayed = []
        self._settle()

    def _loop(self) -> None:
        next_snapshot = time.monotonic() + self.config.snapshot.interval_s
        next_status = 0.0
        while not self._signals["stop"]:
            full = self._full_sink()
            if full is not None:  # backpressure: take no input; sources block, brokers and TCP senders hold it
                self.wake.wait(0.05)  # a PUBACK wakes us at once
                self.wake.clear()
                if self._stalled(full):
                    return
            else:
                items = self._take(0.005 if self._pending else 0.05)
                if items:
                    self.process(items)
            for sink in self.sinks:
                sink.pump()  # MQTT: hand waiting records to paho as PUBACKs free the window
            self._settle()  # MQTT PUBACKs for the sink, an interval fsync: acknowledgements that came due
            self.evict_idle(time.time())
            now = time.monotonic()
            if now >= next_snapshot:
                self.write_snapshot()
                next_snapshot = now + self.config.snapshot.interval_s
            if now >= next_status or self._signals["usr1"]:
                for sink in self.sinks:
                    sink.write([])  # retries what a sink could not write (a full disk) even when idle
                self.write_status()
                next_status = now + self.config.status.interval_s
            if self._signals["usr1"]:
                self._signals["usr1"] = False
                log("info", "counters", **{k: v for k, v in self.status().items() if k != "sources"})
            failed = [s.failed for s in self.sources if s.failed]
            if failed:  # restarting did not help: stop, so that systemd restarts the whole service
                self._fail(failed[0])
                return
            if self._finite_inputs_done():
                log("info", "inputs_finished")
                return

    def _full_sink(self):
        """The first sink whose backlog (records not yet settled) is at its high-water mark, or None.

        Pausing here bounds memory: a sink holds at most high_water + one batch (TAKE_MAX samples, each at most
        a forecast and an anomaly event), the queue holds queue_size items, and nothing is ever dropped."""
        bp, full = self.backpressure, None
        total = 0
        for sink in self.sinks:
            backlog = sink.backlog()
            total += backlog
            if backlog > bp["max_backlog"]:
                bp["max_backlog"] = backlog
            if full is None and backlog >= sink.high_water:
                full = sink
        if self._unsettled_records > bp["max_unsettled_records"]:
            bp["max_unsettled_records"] = self._unsettled_records
        now = time.monotonic()
        if total < self._backlog_seen or not total:
            self._progress_at = now
        self._backlog_seen = total
        if full is not None and self._paused_at is None:
            self._paused_at, bp["pauses"] = now, bp["pauses"] + 1
            bp.update(paused=True, sink=full.name, since_unix=time.time())
            log("warning", "backpressure", sink=full.name, backlog=full.backlog(), high_water=full.high_water,
                effect="input paused until the sink catches up", error=getattr(full, "last_error", None))
        elif full is None and self._paused_at is not None:
            bp["paused_s"] = round(bp["paused_s"] + now - self._paused_at, 3)
            self._paused_at = None
            bp.update(paused=False, sink=None, reason=None, since_unix=None)
        if full is not None:
            bp["reason"] = (f"{full.name}: {full.backlog()} records not yet delivered (high water {full.high_water})"
                            + (f"; {full.last_error}" if getattr(full, "last_error", None) else ""))
        return full

    def _stalled(self, sink) -> bool:
        """A sink that delivered nothing for stall_timeout_s while the intake waits for it: stop (exit 1).

        What it holds was never acknowledged: the snapshot keeps the records, the sources resend the samples."""
        limit = self.config.input.stall_timeout_s
        if not limit or time.monotonic() - self._progress_at < limit:
            return False
        self._fail(f"sink {sink.name} delivered nothing for {limit:g}s with {sink.backlog()} records waiting "
                   f"({getattr(sink, 'last_error', None) or 'no error reported'}); nothing of them was acknowledged")
        return True

    def _open_ends(self) -> None:
        soft, hard = raise_fd_limit()
        log("info", "fd_limit", soft=soft, hard=hard)
        check_fd_budget(self.config.sources, soft)
        self._open_sinks()
        self.sources = start_sources(self.config.sources, self.emit, self.pool.channels,
                                     self.config.input.max_line_bytes, self.stop, self.bounds,
                                     self.config.input.max_source_restarts)

    def _open_sinks(self) -> None:
        self.sinks = open_sinks(self.config.sinks, self.wake)
        for sink in self.sinks:  # sync() sees the open file only: a rotated-out one is made durable as it closes
            sink.fsync_on_rotate = self.wal is not None and self.wal.fsync_policy != "off"

    def _fail(self, error: str) -> None:
        self._state, self._error = "failed", error
        log("error", "failed", error=error)

    def _drain(self) -> None:
        while True:
            items = self._take(0.0)
            if not items:
                return
            self.process(items)

    def _settle_before_stop(self, timeout_s: float = 2.0) -> None:
        """Give the sinks (an MQTT broker's PUBACKs) a moment, so that what was processed is acknowledged."""
        if self.wal is not None:
            self.wal.sync()
        deadline = time.monotonic() + timeout_s
        while True:
            for sink in self.sinks:
                sink.pump()
            self._settle()
            if not self._pending or time.monotonic() > deadline:
                return
            time.sleep(0.01)

    def _finite_inputs_done(self) -> bool:
        return (bool(self.sources) and all(s.finite and s.finished.is_set() for s in self.sources)
                and self.queue.empty())

    def shutdown(self) -> int:
        """Final drain, snapshot and status; 0 after a clean stop, 1 after a failure (systemd restarts us)."""
        failed = self._state == "failed"
        if not failed:
            self._state = "stopping"
        self.write_status()
        self.stop.set()
        self._drain()  # what was read before the stop is still processed (and acknowledged)
        self._settle_before_stop()  # while the sources' connections are still open to carry the acknowledgements
        for source in self.sources:
            source.close()
        self._drain()
        self._settle_before_stop()
        self.write_snapshot()  # holds the records of batches still unsettled: they are sent again at the next start
        for sink in self.sinks:
            sink.close()
        if self.wal is not None:
            self.wal.close()
        if self.web is not None:
            self.web.close()
        unwritten = sum(sink.unwritten for sink in self.sinks)
        if unwritten:  # an honest exit: forecasts were lost, say how many and why
            errors = sorted({str(getattr(sink, "last_error", "")) for sink in self.sinks if sink.unwritten})
            self._fail(f"{unwritten} records could not be written to the sinks: {'; '.join(errors)}")
            failed = True
        if not failed:
            self._state = "stopped"
        log("info", "stopped", samples=self.counters["samples"], snapshot=str(self.snapshot_path), state=self._state,
            error=self._error)
        self.write_status()
        if self.collector in gc.callbacks:  # as it was before run(), for whatever this process does next
            gc.callbacks.remove(self.collector)
        return 1 if failed else 0


def _finite(forecasts: np.ndarray, residuals: np.ndarray | None, times: list, scores: list) -> bool:
    """No NaN or infinity in a round's records: forecasts (B, O) float32, residuals (B, O) float64 (rows without
    a forecast before hold junk, which can only make this say False), times and scores (None: not scored)."""
    total = sum(times) + sum(z for z in scores if z is not None)  # a NaN or infinity makes the sum one too
    return bool(total - total == 0.0 and np.isfinite(forecasts).all() and (residuals is None or np.isfinite(residuals).all()))


def _seen_unix(entry: dict, written: float) -> float:
    """A snapshot entry's last_seen_unix; snapshots from before idle eviction: when the snapshot was written."""
    return float(entry.get("last_seen_unix", written))  # finite when present: check_meta checked it


def serve(config_path: str, fresh: bool = False) -> int:
    from edge_runtime.service.config import read_config

    service = Service(read_config(config_path), fresh=fresh)
    return service.run()
