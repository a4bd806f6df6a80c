"""The service's rounds against one stream at a time: for streams that arrive in any subsets and orders,
with spikes, a frozen stretch and a requested reset, every record the service writes (forecast, residual,
score, warm flag, anomaly start and end) is the one a Session and an AnomalyTracker per stream give, bit for
bit. The service steps a round in one pool call and scores it in one TrackerBank update (issue 19)."""
from __future__ import annotations

import json

import numpy as np

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
