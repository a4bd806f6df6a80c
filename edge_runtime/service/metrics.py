"""What the service exposes on /metrics (Prometheus) and to the live page: per-stream views and a collector.

`Monitor` is fed by the main thread once per model call (`stepped`), with the
round's arrays (ids, times, readings, forecasts, scores, the rare anomaly
events): a few numpy operations a round, no Python loop over its samples
(inside the service, at 100 streams a round: 2.2-2.7 us of CPU a sample before, 1.6 now); it keeps
- per stream: samples, predictions and anomaly events started, and for the
  live page a ring of the last `history` (t, value, forecast for t, score)
  rows plus the recent anomaly spans. Only the first `max_stream_labels`
  streams get a view of their own; later streams are counted together under
  stream="_other" (a fleet of sensor ids must not become unbounded label
  cardinality, nor unbounded memory);
- two latency histograms as bucket counts (one numpy bincount per round, not
  one call per sample).
`ServiceCollector` turns those and the service's own counters into metric
families when Prometheus scrapes: nothing is formatted by hand, and nothing
on the hot path touches prometheus_client.

Counters follow Prometheus' reset semantics: they count from 0 when the
process starts (rate() and increase() handle the reset); the snapshot
restores model state, not metrics.

Threads: the main thread writes, the HTTP threads read. Reads copy (dicts,
rings) without locks; a ring row being written during a copy may read torn,
which a live view can afford and the hot path is spared a lock.
"""
from __future__ import annotations

import math
import os
import time
from collections import deque
from itertools import repeat

import numpy as np
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    InfoMetricFamily)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from edge_runtime.service.fsyncs import FSYNC_BUCKETS_S
from edge_runtime.service.lines import REASONS

OTHER = "_other"  # the label of every stream beyond max_stream_labels
# seconds; the step call is ~10 us to a few ms, sample-to-forecast ~0.1 ms to seconds under backlog
LATENCY_BUCKETS_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                     0.5, 1.0, 2.5, 5.0, 10.0)
EVENTS_KEPT = 32  # anomaly spans per stream the live page can shade


class Buckets:
    """A Prometheus histogram's state: counts per upper bound (le), the sum and the count."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_S):
        self.bounds = np.asarray(bounds, np.float64)
        self.counts = np.zeros(len(bounds) + 1, np.int64)  # the last one: above every bound (+Inf only)
        self.sum = 0.0

    def add(self, values: np.ndarray) -> None:
        # side="left": a value equal to a bound counts in that bound's bucket (le is "less or equal")
        self.counts += np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self.counts))
        self.sum += float(values.sum())

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        return HistogramMetricFamily(name, documentation, buckets=le_buckets(self.bounds, self.counts),
                                     sum_value=self.sum)


def le_buckets(bounds, counts) -> list[tuple[str, int]]:
    """Counts per bucket (the last one above every bound) -> Prometheus' cumulative (le, count) pairs."""
    cumulative = np.cumsum(counts).tolist()
    return [(f"{le:g}", n) for le, n in zip(bounds, cumulative)] + [("+Inf", cumulative[-1])]


class StreamView:
    """One label's rare facts: its slot in the Monitor's arrays (-1 for _other) and its anomaly spans.
    The per-sample figures (samples, rows written, next forecast) live in the Monitor's arrays, so a round
    updates them with a few numpy operations instead of a Python loop over its samples."""

    __slots__ = ("slot", "anomalies", "events")

    def __init__(self, slot: int = -1):
        self.slot = slot
        self.anomalies = 0
        self.events: deque = deque(maxlen=EVENTS_KEPT)  # [start_t, end_t or None]


class Monitor:
    def __init__(self, target: np.ndarray, threshold: float | None, clear_threshold: float | None,
                 max_stream_labels: int, history: int):
        self.target0 = int(target[0])  # the page plots the first forecast channel
        self.threshold, self.clear_threshold = threshold, clear_threshold
        self.max_stream_labels, self.history = max_stream_labels, history
        # stream id -> its view, for the first max_stream_labels ids only: ids beyond (which may churn without
        # end, with idle eviction) are not remembered, they all land in self.other
        self.labelled: dict[str, StreamView] = {}
        self.slot_of: dict[str, int] = {}  # the same ids -> their slot in the arrays below
        self.other = StreamView()
        self.other_samples = 0
        # per labelled slot, written by the main thread once per round with fancy-indexed assignments
        self.rings = np.full((max_stream_labels, history, 4), np.nan)  # (L, N, 4) t, value, forecast for t, score
        self.samples = np.zeros(max_stream_labels, np.int64)  # (L,) stepped samples (= forecasts made)
        self.written = np.zeros(max_stream_labels, np.int64)  # (L,) ring rows written
        self.next_forecast = np.full(max_stream_labels, np.nan)  # (L,) the forecast for the stream's next sample
        self.step_seconds = Buckets()  # one observation per StreamPool.step_many call
        self.e2e_seconds = Buckets()  # one per sample: read by its source -> its forecast computed

    def _view(self, stream_id: str) -> StreamView:
        view = self.labelled.get(stream_id)
        if view is None:
            if len(self.labelled) >= self.max_stream_labels or stream_id == OTHER:
                return self.other
            view = self.labelled[stream_id] = StreamView(len(self.labelled))
            self.slot_of[stream_id] = view.slot
        return view

    def _slots(self, ids: list[str]) -> np.ndarray:
        """(B,) int64: each id's slot, -1 for one counted under _other; labels the newcomers while there is room."""
        # dict.get(id, -1) for every id, looped in C: the one per-sample operation of a round
        slots = np.fromiter(map(self.slot_of.get, ids, repeat(-1, len(ids))), np.int64, len(ids))
        if len(self.labelled) < self.max_stream_labels:
            for k in np.flatnonzero(slots < 0).tolist():  # newcomers, while there is room
                slots[k] = self._view(ids[k]).slot
        return slots

    def labels(self) -> list[tuple[str, int, int]]:
        """(label, samples, anomaly events) of every series to export: the labelled streams, and _other once it
        counted any."""
        samples = self.samples.tolist()
        out = [(label, samples[view.slot], view.anomalies) for label, view in list(self.labelled.items())]
        return out + [(OTHER, self.other_samples, self.other.anomalies)] * bool(self.other_samples)

    def stepped(self, ids: list[str], t: np.ndarray, value: np.ndarray, expected: np.ndarray, score: np.ndarray,
                next_forecast: np.ndarray, events: list[tuple[int, str]], call_s: float, e2e_s: np.ndarray) -> None:
        """One model call's round, one sample per stream: ids (B,); t, value (the first forecast channel's
        reading), expected (the forecast that was made for it, NaN if none), score (NaN if none) and
        next_forecast, each (B,) float64; events: (position in the round, "start"|"end") of the anomaly events
        the round raised; e2e_s (B,): each sample's time from its source's read to its forecast."""
        self.step_seconds.add(np.array([call_s]))
        self.e2e_seconds.add(e2e_s)
        slots = self._slots(ids)  # (B,)
        for k, event in events:  # rare: a few per thousand rounds
            view = self.labelled.get(ids[k], self.other)
            if event == "start":
                view.anomalies += 1
                view.events.append([float(t[k]), None])
            elif view.events:
                view.events[-1][1] = float(t[k])
        mine = np.flatnonzero(slots >= 0)  # (K,) positions of labelled streams
        self.other_samples += len(ids) - len(mine)
        if not len(mine):
            return
        slot = slots[mine]  # (K,) distinct: a stream appears once per round
        self.samples[slot] += 1
        self.rings[slot, self.written[slot] % self.history] = np.stack(
            (t[mine], value[mine], expected[mine], score[mine]), axis=1)  # (K, 4)
        self.written[slot] += 1
        self.next_forecast[slot] = next_forecast[mine]

    def streams(self) -> list[str]:
        return list(self.labelled)

    def rows(self, slot: int, n: int) -> np.ndarray:
        """The last n rows of a slot's ring, oldest first: (k, 4)."""
        written = int(self.written[slot])
        k = min(n, written, self.history)
        return self.rings[slot, np.arange(written - k, written) % self.history]

    def live(self, stream_id: str, n: int, after: float | None = None) -> dict | None:
        """What the page draws for one stream: the last n samples, forecasts, scores and anomaly spans.

        after: the newest t the caller already has; only newer rows are sent ("full": false), unless the
        stream's clock went back (a requested reset), when the whole window is sent again ("full": true)."""
        view = self.labelled.get(stream_id)
        if view is None:
            return None
        rows = self.rows(view.slot, n)
        t0 = rows[0, 0] if len(rows) else None
        full = after is None or not len(rows) or rows[-1, 0] < after
        if not full:
            rows = rows[rows[:, 0] > after]
        return {"stream": stream_id, "full": bool(full), "t": _floats(rows[:, 0]), "value": _floats(rows[:, 1]),
                "expected": _floats(rows[:, 2]), "score": _floats(rows[:, 3]),
                "next_forecast": _floats(self.next_forecast[view.slot:view.slot + 1])[0],
                "threshold": self.threshold, "clear_threshold": self.clear_threshold,
                "events": [list(e) for e in list(view.events) if t0 is None or e[1] is None or e[1] >= t0],
                "samples": int(self.samples[view.slot]), "anomalies": view.anomalies}


def _floats(column: np.ndarray) -> list:
    """JSON has no NaN: none-yet values (no forecast, warm-up) become null."""
    return [x if math.isfinite(x) else None for x in column.tolist()]


def health(service) -> dict:
    """The page's service panel: counters (the page turns them into rates), latency, snapshot, queue, RSS."""
    c = service.counters
    written = service.snapshot_info.get("written_unix")
    return {"now_unix": time.time(), "uptime_s": time.time() - service.started_unix, "streams": len(service.streams),
            "samples": c["samples"], "predictions": c["predictions"], "anomalies": c["anomalies"],
            "rejected": {k: v for k, v in dict(c["rejected"]).items() if v}, "queue": service.queue.qsize(),
            "step_latency_us": service.step_latency.summary(), "e2e_latency_us": service.e2e_latency.summary(),
            "snapshot_age_s": None if written is None else time.time() - written, "rss_bytes": rss_bytes(),
            "bundle": service.model.manifest.name, "variant": service.model.variant.name}


def rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


class ServiceCollector(Collector):
    """Metric families built at scrape time from the service's counters and the monitor."""

    def __init__(self, service, monitor: Monitor):
        self.service, self.monitor = service, monitor

    def collect(self):
        s, m = self.service, self.monitor
        c = s.counters
        series = m.labels()
        for name, column, documentation in (
                ("edge_samples", 1, "Samples accepted and stepped, per stream"),
                ("edge_predictions", 1, "One-step forecasts made, per stream (one per stepped sample)"),
                ("edge_anomaly_events", 2, "Anomaly alarms started, per stream")):
            family = CounterMetricFamily(name, documentation, labels=["stream"])
            for row in series:
                family.add_metric([row[0]], row[column])
            yield family
        rejected = CounterMetricFamily("edge_rejected", "Inputs rejected, by reason", labels=["reason"])
        for reason in REASONS:
            rejected.add_metric([reason], c["rejected"][reason])
        yield rejected
        yield _labelled(CounterMetricFamily("edge_stream_resets", "Stream state resets, by cause", labels=["cause"]),
                        c["resets"])
        yield _labelled(CounterMetricFamily("edge_stream_evictions", "Streams evicted (idle, or the stream table "
                                            "full), by cause", labels=["cause"]), c.get("evicted", {}))
        # copied in by the main thread's refresh_counters() with every status write (status interval_s)
        sinks = dict(c.get("sinks", {}))
        for key, documentation in (("written", "Records a sink wrote"), ("failures", "Failed sink writes"),
                                   ("dropped", "Records a sink dropped (0 since backpressure: a full sink pauses "
                                    "the input instead)")):
            yield _labelled(CounterMetricFamily(f"edge_sink_{key}", documentation, labels=["sink"]),
                            {kind: stats[key] for kind, stats in sinks.items() if key in stats})
        yield _labelled(GaugeMetricFamily("edge_sink_pending", "Records waiting for a sink", labels=["sink"]),
                        {kind: stats["pending"] for kind, stats in sinks.items() if "pending" in stats})
        yield _labelled(GaugeMetricFamily("edge_sink_backlog", "Records handed to a sink and not yet delivered; at "
                                          "its high-water mark the input pauses", labels=["sink"]),
                        {kind: stats["backlog"] for kind, stats in sinks.items() if "backlog" in stats})
        yield _labelled(CounterMetricFamily("edge_source_restarts", "Source threads restarted after a failure",
                                            labels=["source"]), c.get("source_restarts", {}))
        connections = dict(c.get("connections", {}))
        if connections:
            yield GaugeMetricFamily("edge_tcp_connections", "Open TCP source connections", value=connections["open"])
            yield _labelled(CounterMetricFamily("edge_tcp_connections_closed", "TCP connections refused (cap) or "
                                                "closed idle", labels=["cause"]),
                            {"refused": connections["refused"], "idle": connections["idle_closed"]})
        fsyncs = HistogramMetricFamily("edge_fsync_seconds", "Duration of each fsync, per file: under fsync = "
                                       "\"batch\" a round's forecasts wait for the write-ahead log's", labels=["file"])
        for name, clock in s.fsync_clocks():
            fsyncs.add_metric([name], le_buckets(FSYNC_BUCKETS_S, clock.buckets), sum_value=clock.seconds)
        yield fsyncs
        yield m.step_seconds.family("edge_step_seconds", "Duration of one model call stepping a round of streams")
        yield m.e2e_seconds.family("edge_sample_to_forecast_seconds",
                                   "From a sample read by its source to its forecast computed")
        yield GaugeMetricFamily("edge_streams", "Streams with state", value=len(s.streams))
        yield GaugeMetricFamily("edge_streams_max", "Stream limit (max_streams)", value=s.pool.max_streams)
        yield GaugeMetricFamily("edge_queue_depth", "Items queued for the model", value=s.queue.qsize())
        yield GaugeMetricFamily("edge_queue_capacity", "Queue size limit", value=s.queue.maxsize)
        snapshot = s.snapshot_info
        if snapshot.get("written_unix") is not None:  # no sample rather than a made-up age before the first one
            yield GaugeMetricFamily("edge_snapshot_age_seconds", "Seconds since the last snapshot was written",
                                    value=time.time() - snapshot["written_unix"])
        if snapshot.get("duration_s") is not None:
            yield GaugeMetricFamily("edge_snapshot_duration_seconds", "How long the last snapshot write took",
                                    value=snapshot["duration_s"])
            yield GaugeMetricFamily("edge_snapshot_bytes", "Size of the last snapshot", value=snapshot["bytes"])
        info = InfoMetricFamily("edge_bundle", "The bundle being served")
        info.add_metric([], {"name": s.model.manifest.name, "sha256": s.identity, "variant": s.model.variant.name,
                             "backend": str(s.model.backend), "batched": str(s.pool.batched is not None).lower()})
        yield info


def _labelled(family, values: dict):
    """One sample per (label value, count); dict() first: another thread may replace the dict meanwhile."""
    for label, value in dict(values).items():
        family.add_metric([label], value)
    return family


def registry_for(service, monitor: Monitor) -> CollectorRegistry:
    """A registry of our own (not the global default): the service's families plus process_* (RSS, CPU, fds)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service, monitor))
    ProcessCollector(registry=registry)
    return registry
