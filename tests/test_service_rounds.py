"""The service's rounds against one stream at a time: for streams that arrive in any subsets and orders,
with spikes, a frozen stretch and a requested reset, every record the service writes (forecast, residual,
score, warm flag, anomaly start and end) is the one a Session and an AnomalyTracker per stream give, bit for
bit. The service steps a round in one pool call and scores it in one TrackerBank update (issue 19)."""
from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import IN_PROCESS_BACKEND
from edge_runtime.anomaly import AnomalyTracker
from edge_runtime.service.lines import Reset, Sample
from service_helpers import read_jsonl, write_config

STREAMS, ROUNDS, WARMUP = 6, 90, 4


def _inputs(mean, std, rng):
    """Rounds of (stream, values | "reset") in arrival order: each round a random subset, shuffled."""
    rounds = []
    for t in range(ROUNDS):
        chosen = rng.permutation(STREAMS)[:rng.integers(1, STREAMS + 1)].tolist()
        chosen += [s for s in (1, 2) if s not in chosen]  # the spiking and the freezing stream come every round
        rng.shuffle(chosen)
        items = []
        for s in chosen:
            values = mean + std * (0.3 * np.sin(t / 7 + s) + 0.01 * rng.normal(size=len(mean)))
            if s == 1 and t % 23 == 11:
                values = values + 6 * std  # a spike
            if s == 2 and 30 <= t < 80:
                values = mean.copy()  # frozen: the stillness check
            items.append((s, values.tolist()))
        if t == 55:
            items.append((3, "reset"))
        rounds.append(items)
    return rounds


def _expected(model, spec, rounds, target):
    """The records one Session and one AnomalyTracker per stream give, in the service's record order."""
    sessions = {s: model.session() for s in range(STREAMS)}
    trackers = {s: AnomalyTracker(spec) for s in range(STREAMS)}
    forecast = dict.fromkeys(range(STREAMS))
    since = dict.fromkeys(range(STREAMS), 0)
    records = []
    for t, items in enumerate(rounds):
        for s, values in items:
            if values == "reset":
                sessions[s].reset(), trackers[s].reset()
                forecast[s], since[s] = None, 0
                continue
            new = np.asarray(sessions[s].step(values), np.float32)  # (O,)
            since[s] += 1
            warm = since[s] > WARMUP
            residual = score = None
            if forecast[s] is not None:
                residual = (np.asarray(values, np.float64)[target] - forecast[s]).tolist()
                if warm:
                    score, event = trackers[s].update(np.asarray(residual))
                    if event is not None:
                        records.append({"type": "anomaly", "id": f"s{s}", "t": float(t), "event": event,
                                        "score": score})
            forecast[s] = new
            records.append({"type": "prediction", "id": f"s{s}", "t": float(t), "step": since[s],
                            "prediction": new.tolist(), "residual": residual, "score": score, "warm": warm})
    return records


def test_the_services_records_are_one_session_and_tracker_per_stream_bit_for_bit(fixture_bundles, tmp_path):
    from edge_runtime.service.config import read_config
    from edge_runtime.service.service import Service
    from edge_runtime.service.sinks import open_sinks

    config = write_config(tmp_path, fixture_bundles["lstm"][1], "[sources.stdin]\n",
                          f'[sinks.jsonl]\npath = "{tmp_path / "out.jsonl"}"\nrotate_bytes = 0\n',
                          extra=f'backend = "{IN_PROCESS_BACKEND}"\n[streams]\nwarmup_steps = {WARMUP}\n'
                                f"max_gap_s = 1000.0\n[wal]\nfsync = \"off\"\n")
    service = Service(read_config(config))
    assert service.bank is not None, "the fixture bundle has an anomaly section"
    manifest = service.model.manifest
    mean = np.asarray(manifest.normalization["mean"], np.float64)
    std = np.asarray(manifest.normalization["std"], np.float64)
    rounds = _inputs(mean, std, np.random.default_rng(7))
    service.sinks = open_sinks(service.config.sinks)
    t0 = 1_700_000_000.0
    for t, items in enumerate(rounds):
        service.process([Reset(f"s{s}", "test") if values == "reset" else
                         Sample(f"s{s}", t0 + t, tuple(values), "test", 0.0) for s, values in items])
    for sink in service.sinks:
        sink.close()
    written, _ = read_jsonl(tmp_path / "out.jsonl", kind=None)
    for record in written:
        record["t"] -= t0
    expected = _expected(service.model, service.spec, rounds, service.target)
    events = [r["event"] for r in expected if r["type"] == "anomaly"]
    assert events.count("start") >= 3 and events.count("end") >= 2, events  # alarms raised and cleared
    assert any(r["id"] == "s2" and r["type"] == "anomaly" for r in expected), "the frozen stream must alarm"
    assert len(written) == len(expected)
    for k, (got, want) in enumerate(zip(written, expected)):
        assert json.dumps(got) == json.dumps(want), (k, got, want)


def _full_path_process(service, items: list) -> None:
    """Service.process without its inline admission: every sample through _admit (and _accept), into the
    same rounds. The reference the inline path must equal."""
    records, lines, acks = [], [], []
    service._out = (records, lines)
    now = time.time()
    for item in items:
        if type(item) is Reset:
            service._reset_requested(item.stream)
        elif service._admit(item, now):
            service._rounds.add(item)
    service._step_rounds()
    service._commit(now, records, lines, acks)


MAX_GAP_S, HORIZON_S = 1000.0, 100.0
_STEPS = st.sampled_from([1.0, 1.0, 1.0, 0.25, 0.0, -0.5, MAX_GAP_S, MAX_GAP_S + 1.0, "future", "reset"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrivals=st.lists(st.tuples(st.integers(0, 3), _STEPS, st.booleans()), min_size=1, max_size=40),
       cuts=st.lists(st.integers(1, 40), max_size=4))
def test_inline_admission_decides_as_the_full_checks(paired_services, arrivals, cuts):
    """Duplicates, out-of-order and future timestamps, gaps just at and past max_gap_s, resets, CSV lines and
    not: the inline admission in Service.process rejects, resets and logs exactly what _admit/_accept do."""
    fast, full, example = paired_services["fast"], paired_services["full"], next(paired_services["counter"])
    mean = fast.model.manifest.normalization["mean"]
    # streams 0 and 1 start long before the wall clock (a gap step stays behind the horizon), 2 and 3 just
    # before it (a future sample is within max_gap_s of them): each check is the only one to refuse some sample
    now = time.time()
    clocks: dict[int, float] = {}
    start = {0: now - 5 * MAX_GAP_S, 1: now - 5 * MAX_GAP_S, 2: now - HORIZON_S / 2, 3: now - HORIZON_S / 2}
    items = []
    for k, step, as_line in arrivals:
        stream = f"x{example}-{k}"
        if step == "reset":
            items.append(Reset(stream, "test"))
            continue
        if step == "future":
            t = time.time() + HORIZON_S + 1.0
        else:
            t = clocks[k] = clocks.get(k, start[k]) + step
        values = tuple(float(m) + 0.01 * k for m in mean)
        line = ",".join([stream, repr(t), *map(repr, values)]) if as_line else None
        items.append(Sample(stream, t, values, "test", time.perf_counter(), None, line))
    chunks = [items[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(items)]) if items[a:b]]
    for chunk in chunks:
        fast.process(list(chunk))
        _full_path_process(full, list(chunk))
    assert fast.counters == full.counters
    assert _wal_events(fast) == _wal_events(full)
    assert (fast.state_dir / "out.jsonl").read_bytes() == (full.state_dir / "out.jsonl").read_bytes()
    assert {i: s.last_t for i, s in fast.streams.items()} == {i: s.last_t for i, s in full.streams.items()}
    assert list(fast.streams) == list(full.streams)  # the LRU order: eviction picks from its front
    assert np.array_equal(fast.since_reset, full.since_reset)


def _wal_events(service) -> list:
    lines = service.wal.path.read_bytes().splitlines()
    return [json.loads(line)["events"] for line in lines if b'"seq"' in line]


@pytest.fixture(scope="module")
def paired_services(fixture_bundles, tmp_path_factory):
    from edge_runtime.service.config import read_config
    from edge_runtime.service.service import Service
    from edge_runtime.service.sinks import open_sinks

    services = {"counter": itertools.count()}
    for name in ("fast", "full"):
        folder = tmp_path_factory.mktemp(name)
        config = write_config(folder, fixture_bundles["lstm"][1], "[sources.stdin]\n",
                              f'[sinks.jsonl]\npath = "{folder / "state" / "out.jsonl"}"\nrotate_bytes = 0\n',
                              extra=f'backend = "{IN_PROCESS_BACKEND}"\n[streams]\nmax_streams = 512\n'
                                    f"max_gap_s = {MAX_GAP_S}\n[input]\nfuture_horizon_s = {HORIZON_S}\n"
                                    '[wal]\nfsync = "off"\n')
        service = services[name] = Service(read_config(config))
        service.sinks = open_sinks(service.config.sinks)
    yield services
    for name in ("fast", "full"):
        for sink in services[name].sinks:
            sink.close()


def test_the_collector_clock_times_each_generation():
    import gc

    from edge_runtime.service.service import CollectorClock

    clock = CollectorClock()
    gc.callbacks.append(clock)
    try:
        gc.collect(0)
        assert clock.seconds[0] > 0 and clock.seconds[2] == 0
        gc.collect(2)
    finally:
        gc.callbacks.remove(clock)
    assert clock.seconds[2] > 0 and clock.longest == max(clock.longest, clock.seconds[2])
    assert clock.longest <= sum(clock.seconds)


def _service(folder, bundle):
    """An in-process service with a JSONL sink and a write-ahead log in folder/state (sinks open)."""
    from edge_runtime.service.config import read_config
    from edge_runtime.service.service import Service
    from edge_runtime.service.sinks import open_sinks

    config = write_config(folder, bundle, "[sources.stdin]\n",
                          f'[sinks.jsonl]\npath = "{folder / "state" / "out.jsonl"}"\nrotate_bytes = 0\n',
                          extra=f'backend = "{IN_PROCESS_BACKEND}"\n[streams]\nmax_streams = 64\n'
                                f"max_gap_s = {MAX_GAP_S}\n[input]\nfuture_horizon_s = {HORIZON_S}\n"
                                '[wal]\nfsync = "off"\n')
    service = Service(read_config(config))
    service.sinks = open_sinks(service.config.sinks)
    return service, config


def _records_by_stream(service) -> dict:
    """out.jsonl's lines, as written, per stream id (each stream's in order)."""
    for sink in service.sinks:
        sink.close()
    by_stream: dict = {}
    for line in (service.state_dir / "out.jsonl").read_bytes().splitlines():
        by_stream.setdefault(json.loads(line)["id"], []).append(line)
    return by_stream


def _state_by_stream(service) -> dict:
    """Each stream's state rows, forecast and step count, as bytes: equal only if bit for bit equal."""
    rows = dict(zip(service.streams, service.pool.rows_of(list(service.streams)).tolist()))
    return {s: (b"".join(a[r].tobytes() for a in service.pool.state.values()), service.forecasts[r].tobytes(),
                int(service.since_reset[r]), service.streams[s].last_t) for s, r in rows.items()}


def test_a_burst_of_each_stream_is_stepped_as_rounds_of_all_streams(fixture_bundles, tmp_path):
    """One take of 10 samples from each of 20 streams, stream after stream (as MQTT batch payloads arrive): 10
    model calls of 20 streams, not 200 of one; each stream's records bit for bit those of one sample a take.
    A second take resets one stream and gaps another mid-burst; a restart replays the log into the same state."""
    from edge_runtime.service.config import read_config
    from edge_runtime.service.service import Service

    bundle = fixture_bundles["lstm"][1]
    burst, burst_config = _service(tmp_path / "burst", bundle)
    single, _ = _service(tmp_path / "single", bundle)
    mean = burst.model.manifest.normalization["mean"]
    t0 = time.time() - 5 * MAX_GAP_S

    def sample(s: int, t: float) -> Sample:
        values = tuple(float(m) * (1 + 0.01 * np.sin(t + s)) for m in mean)
        line = ",".join([f"b{s}", repr(t), *map(repr, values)]) if s % 2 else None  # CSV lines and not
        return Sample(f"b{s}", t, values, "test", time.perf_counter(), None, line)

    first = [sample(s, t0 + k) for s in range(20) for k in range(10)]
    second = []
    for s in range(20):
        for k in range(10, 20):
            if s == 3 and k == 15:
                second.append(Reset("b3", "test"))
            second.append(sample(s, t0 + k + (MAX_GAP_S + 1 if s == 4 and k >= 14 else 0)))  # b4: a gap
    burst.process(first)
    assert burst.counters["batches"] == 10 and burst.counters["samples"] == 200
    burst.process(second)
    for item in first + second:
        single.process([item])
    assert single.counters["batches"] == single.counters["samples"] == 400
    assert burst.counters["resets"] == single.counters["resets"] == {"gap": 1, "requested": 1}
    assert {k: v for k, v in burst.counters.items() if k != "batches"} == \
        {k: v for k, v in single.counters.items() if k != "batches"}
    assert _state_by_stream(burst) == _state_by_stream(single)
    assert _records_by_stream(burst) == _records_by_stream(single)
    burst.wal.close()
    restarted = Service(read_config(burst_config))  # as after a kill -9: no snapshot, the log replayed
    restarted.wal.close()
    assert restarted.counters["wal"]["replayed_samples"] == 400
    assert _state_by_stream(restarted) == _state_by_stream(burst)
