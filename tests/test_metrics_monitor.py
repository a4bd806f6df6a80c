"""The live page's and /metrics' bookkeeping (edge_runtime/service/metrics.py `Monitor`) against a plain
per-sample model of what it must hold: rounds of random streams (more than the label cap, so some land in
_other), random anomaly events, rings that wrap. The Monitor updates arrays once per round; the reference
walks sample by sample, as the code before it did."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("prometheus_client")
from edge_runtime.service.metrics import OTHER, Monitor  # noqa: E402

LABELS, HISTORY = 4, 5


class Reference:
    """Per stream, in the order ids first appear: samples, anomalies, spans, ring rows, next forecast."""

    def __init__(self):
        self.labelled: dict[str, dict] = {}
        self.other = {"samples": 0, "anomalies": 0, "events": []}

    def view(self, stream: str) -> dict:
        if stream not in self.labelled and len(self.labelled) < LABELS:
            self.labelled[stream] = {"samples": 0, "anomalies": 0, "events": [], "rows": [], "next": None}
        return self.labelled.get(stream, self.other)

    def sample(self, stream, t, value, expected, score, forecast, event) -> None:
        view = self.view(stream)
        if event == "start":
            view["anomalies"] += 1
            view["events"].append([t, None])
        elif event == "end" and view["events"]:
            view["events"][-1][1] = t
        view["samples"] += 1
        if "rows" in view:
            view["rows"].append([t, value, expected, score])
            view["next"] = forecast


rounds = st.lists(  # each round: distinct streams out of s0..s7, each with an optional event
    st.lists(st.tuples(st.integers(0, 7), st.sampled_from([None, None, None, "start", "end"])),
             min_size=1, max_size=8, unique_by=lambda x: x[0]),
    min_size=1, max_size=12)


def _nan_equal(a, b) -> bool:
    return all((x is None and y is None) or (x is not None and y is not None and
               (x == y or (math.isnan(x) and math.isnan(y)))) for x, y in zip(a, b, strict=True))


@settings(max_examples=150, deadline=None)
@given(rounds, st.randoms(use_true_random=False))
def test_monitor_holds_what_a_sample_by_sample_walk_holds(plan, rng):
    monitor, reference = Monitor(np.array([0]), 4.0, 3.0, LABELS, HISTORY), Reference()
    clock = 1000.0
    for members in plan:
        clock += 1.0
        ids = [f"s{k}" for k, _ in members]
        t = np.full(len(ids), clock)
        value = np.array([rng.uniform(-5, 5) for _ in ids])
        expected = np.array([rng.choice([math.nan, rng.uniform(-5, 5)]) for _ in ids])
        score = np.array([rng.choice([math.nan, rng.uniform(0, 9)]) for _ in ids])
        forecast = np.array([rng.uniform(-5, 5) for _ in ids], np.float32)
        events = [(k, event) for k, (_, event) in enumerate(members) if event is not None]
        monitor.stepped(ids, t, value, expected, score, forecast, events, 0.001, np.full(len(ids), 0.002))
        for k, (stream, (_, event)) in enumerate(zip(ids, members)):
            reference.sample(stream, clock, value[k], expected[k], score[k], float(forecast[k]), event)

    assert monitor.streams() == list(reference.labelled)
    want = [(s, v["samples"], v["anomalies"]) for s, v in reference.labelled.items()]
    if reference.other["samples"]:
        want.append((OTHER, reference.other["samples"], reference.other["anomalies"]))
    assert monitor.labels() == want
    for stream, view in reference.labelled.items():
        live = monitor.live(stream, 100)
        kept = view["rows"][-HISTORY:]  # the ring holds the last HISTORY rows
        assert [live[key] for key in ("samples", "anomalies")] == [view["samples"], view["anomalies"]]
        for column, key in enumerate(("t", "value", "expected", "score")):
            assert _nan_equal([None if math.isnan(r[column]) else r[column] for r in kept], live[key]), key
        assert live["next_forecast"] == view["next"]
        first_t = kept[0][0]
        assert live["events"] == [e for e in view["events"][-32:] if e[1] is None or e[1] >= first_t]
        newest = monitor.live(stream, 100, after=kept[-2][0]) if len(kept) > 1 else None
        if newest is not None:  # the page's poll for what is new since its newest row
            assert newest["full"] is False and newest["t"] == [kept[-1][0]]
    count = monitor.e2e_seconds.counts.sum()
    assert count == sum(len(r) for r in plan) and monitor.step_seconds.counts.sum() == len(plan)
