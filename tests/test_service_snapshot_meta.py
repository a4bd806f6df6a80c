"""A snapshot whose meta was edited or damaged, yet still a readable npz with readable JSON.

The npz's CRCs catch damage to the bytes, not an edit (or a bug, or damage before the write) that still
parses. Before snapshot.check_meta the restore trusted the meta: since_reset "x" ended the start in a
ValueError traceback, steps 10**30 in an OverflowError, a missing id in a KeyError; steps -5, an id of
"../../etc" (used in MQTT topics afterwards), a duplicated id, anomaly {"active": "x", ...} were restored in
silence; wal_seq "x" and unsettled [{"seq": "x"}] were tracebacks; sink_positions [1] or an unsettled
record whose event is a list passed the start and raised out of run() when the owed records were sent
again (a still_seen past the stillness window: an IndexError at the stream's first sample). Now a field
this runtime could not have written refuses the snapshot with one line naming the file and the field
(exit 2), or, with fresh_start = true, discards it with a warning: nothing half-restored, the file left
as it was.

Every Service here is built in this process (0.2 s each: the model's probe child and the load).
"""
from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import IN_PROCESS_BACKEND
from edge_runtime.service.lines import STREAM_ID, Sample
from service_helpers import write_config

T0 = 1_700_000_000.0
ABSENT = object()  # the field removed instead of replaced


def _config(folder: Path, bundle: Path, fresh_start: bool = False) -> Path:
    return write_config(folder, bundle, "[sources.stdin]\n", f'[sinks.jsonl]\npath = "{folder / "out.jsonl"}"\n',
                        extra=f'backend = "{IN_PROCESS_BACKEND}"\nfresh_start = {str(fresh_start).lower()}\n'
                              '[wal]\nfsync = "off"\n')


def _service(config: Path):
    from edge_runtime.service.config import read_config
    from edge_runtime.service.service import Service

    return Service(read_config(config))


def _write(folder: Path, meta, arrays: dict) -> Path:
    """The snapshot as given: meta's JSON as it is (NaN and Infinity included), no check on the way."""
    path = folder / "state" / "snapshot.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    return path


@pytest.fixture(scope="module")
def valid(fixture_bundles, tmp_path_factory):
    """(bundle, meta, arrays) of a snapshot the service wrote: streams a and b 40 samples in (forecasts, anomaly
    trackers with the stillness part), [wal] on; plus a batch of records still owed to the sinks."""
    from edge_runtime.service.snapshot import read_snapshot

    bundle = fixture_bundles["gru"][1]
    folder = tmp_path_factory.mktemp("valid")
    service = _service(_config(folder, bundle))
    assert service.bank is not None and service.bank._still, "the fixture bundle scores stillness"
    mean = np.asarray(service.model.manifest.normalization["mean"], np.float64)
    std = np.asarray(service.model.manifest.normalization["std"], np.float64)
    rng = np.random.default_rng(3)
    for t in range(40):
        service.process([Sample(s, T0 + t, tuple(mean + std * rng.normal(size=mean.shape)), "test", 0.0)
                         for s in ("a", "b")])
    service.write_snapshot()
    meta, arrays = read_snapshot(service.snapshot_path)
    record = {"type": "prediction", "id": "a", "t": T0 + 39, "step": 40, "prediction": [20.0], "residual": None,
              "score": None, "warm": True}
    meta.update(sunk=meta["wal_seq"] - 1, sink_positions={"jsonl": [1234, 0]},  # the last batch not in the sinks yet
                unsettled=[{"seq": meta["wal_seq"], "records": [record]}])
    assert meta["streams"][0]["anomaly"]["still_seen"] > 0
    return bundle, meta, arrays


def _stream(key, value, k=0):
    def edit(meta, arrays):
        if value is ABSENT:
            del meta["streams"][k][key]
        else:
            meta["streams"][k][key] = value
        return meta, arrays
    return edit


def _anomaly(k=0, **changes):
    def edit(meta, arrays):
        meta["streams"][k]["anomaly"].update(changes)
        if k:  # restored last (most recently seen): the other stream is in the pool when this one fails
            meta["streams"][k]["last_seen_unix"] = meta["streams"][0]["last_seen_unix"] + 1
        return meta, arrays
    return edit


def _top(key, value):
    def edit(meta, arrays):
        if value is ABSENT:
            del meta[key]
        else:
            meta[key] = value
        return meta, arrays
    return edit


def _record(**changes):
    def edit(meta, arrays):
        meta["unsettled"][0]["records"][0].update(changes)
        return meta, arrays
    return edit


def _replace_entry(k, value):
    def edit(meta, arrays):
        meta["streams"][k] = value
        return meta, arrays
    return edit


def _duplicate_id(meta, arrays):
    meta["streams"][1]["id"] = meta["streams"][0]["id"]
    return meta, arrays


def _no_streams(meta, arrays):
    """No streams key and arrays of no rows (with rows, read_snapshot's row count refuses it first)."""
    del meta["streams"]
    return meta, {name: array[:0] for name, array in arrays.items()}


def _wide_forecast(meta, arrays):
    return meta, {**arrays, "forecast": np.zeros((len(meta["streams"]), 5), np.float32)}


# (case, edit of (meta, arrays), what the message must hold besides the path)
REFUSED = [
    ("since_reset-text", _stream("since_reset", "x"), "stream 0 ('a'): since_reset 'x'"),
    ("since_reset-infinite", _stream("since_reset", math.inf), "since_reset inf"),  # JSON 1e400 reads as inf
    ("since_reset-float", _stream("since_reset", 3.0), "since_reset 3.0"),
    ("since_reset-bool", _stream("since_reset", True), "since_reset True"),
    ("since_reset-negative", _stream("since_reset", -1), "since_reset -1"),
    ("since_reset-past-int64", _stream("since_reset", 2 ** 63), "since_reset"),
    ("steps-negative", _stream("steps", -5), "stream 0 ('a'): steps -5"),
    ("steps-huge", _stream("steps", 10 ** 30), "steps 1000000"),
    ("steps-text", _stream("steps", "7"), "steps '7'"),
    ("steps-missing", _stream("steps", ABSENT), "steps None"),
    ("last_t-text", _stream("last_t", "x"), "last_t 'x'"),
    ("last_t-list", _stream("last_t", [1.0]), "last_t [1.0]"),
    ("last_t-bool", _stream("last_t", True), "last_t True"),
    ("last_t-beyond-float", _stream("last_t", 10 ** 400), "last_t 1000"),
    ("last_seen_unix-text", _stream("last_seen_unix", "x"), "last_seen_unix 'x'"),
    ("last_seen_unix-null", _stream("last_seen_unix", None), "last_seen_unix None"),
    ("last_seen_unix-nan", _stream("last_seen_unix", math.nan), "last_seen_unix nan"),
    ("last_seen_unix-beyond-float", _stream("last_seen_unix", 10 ** 400), "last_seen_unix 1000"),
    ("id-path", _stream("id", "../../etc"), "stream 0 ('../../etc'): id"),
    ("id-newline", _stream("id", "a\n"), "stream 0 ('a\\n'): id"),
    ("id-empty", _stream("id", ""), "stream 0 (''): id"),
    ("id-too-long", _stream("id", "a" * 65), "stream 0 ('aaaa"),
    ("id-number", _stream("id", 5), "stream 0 (5): id"),
    ("id-missing", _stream("id", ABSENT), "stream 0 (None): id"),
    ("id-duplicate", _duplicate_id, "stream 1 ('a')"),
    ("entry-list", _replace_entry(0, [1, 2]), "stream 0 [1, 2]"),
    ("entry-null", _replace_entry(0, None), "stream 0 None"),
    ("anomaly-list", _stream("anomaly", [1]), "stream 0 ('a'): anomaly [1]"),
    ("anomaly-empty", _stream("anomaly", {}), "anomaly active"),
    ("anomaly-active-text", _anomaly(active="x"), "anomaly active 'x'"),
    ("anomaly-quiet_steps-negative", _anomaly(quiet_steps=-1), "anomaly quiet_steps -1"),
    ("anomaly-last_z-text", _anomaly(last_z=["x"]), "anomaly last_z"),
    ("anomaly-last_z-wrong-width", _anomaly(1, last_z=[0.0, 0.0, 0.0]), "stream 1 ('b')"),
    ("anomaly-still_seen-past-window", _anomaly(1, primed=False, still_seen=10 ** 6), "still_seen 1000000"),
    ("streams-object", _top("streams", {"a": 1}), "streams {'a': 1}"),
    ("streams-missing", _no_streams, "streams None"),
    ("meta-list", lambda meta, arrays: ([meta], arrays), "meta is list"),
    ("wal_seq-text", _top("wal_seq", "x"), "wal_seq 'x'"),
    ("wal_seq-negative", _top("wal_seq", -1), "wal_seq -1"),
    ("wal_seq-float", _top("wal_seq", 2.0), "wal_seq 2.0"),
    ("sunk-bool", _top("sunk", True), "sunk True"),
    ("sink_positions-list", _top("sink_positions", [1]), "sink_positions [1]"),
    ("sink_positions-text", _top("sink_positions", {"jsonl": "x"}), "sink_positions"),
    ("sink_positions-short", _top("sink_positions", {"jsonl": [1]}), "sink_positions"),
    ("unsettled-object", _top("unsettled", {"seq": 1}), "unsettled {'seq': 1}"),
    ("unsettled-seq-text", _top("unsettled", [{"seq": "x", "records": 5}]), "unsettled 0"),
    ("unsettled-records-number", _top("unsettled", [{"seq": 1, "records": 5}]), "unsettled 0"),
    ("unsettled-record-id", _record(id="../x"), "unsettled 0"),
    ("unsettled-record-event-list", _record(event=[1]), "unsettled 0"),
    ("forecast-too-wide", _wide_forecast, "forecast is not"),
]


@pytest.mark.parametrize("edit, fragment", [pytest.param(edit, fragment, id=case) for case, edit, fragment in REFUSED])
def test_an_edited_snapshot_is_refused_in_one_line_or_discarded_when_told(valid, tmp_path, edit, fragment):
    from edge_runtime.service.service import ServiceError

    bundle, meta, arrays = valid
    path = _write(tmp_path, *edit(copy.deepcopy(meta), dict(arrays)))
    before = path.read_bytes()
    with pytest.raises(ServiceError) as refused:
        _service(_config(tmp_path, bundle))
    message = str(refused.value)
    assert "\n" not in message and str(path) in message and fragment in message, message
    assert "Set fresh_start = true in the config or pass --fresh" in message
    assert path.read_bytes() == before

    told = _service(_config(tmp_path, bundle, fresh_start=True))
    assert not told.streams and not told.pool.ids() and told.snapshot_info["streams"] == 0
    # nothing half-restored: a row a stream restored before the refusal is as a new stream finds it
    assert not told.has_forecast.any() and not told.since_reset.any() and not told.forecasts.any()
    bank = told.bank
    assert not (bank.active.any() or bank.quiet_steps.any() or bank.primed.any() or bank.still_seen.any()
                or bank.last_z.any() or bank.mean_change.any())
    assert told.counters["evicted"]["idle"] == 0
    assert path.read_bytes() == before


# tolerated: what the runtime wrote before (no last_seen_unix, pre-bounds clocks) or what a heal fixes
TOLERATED = [
    ("last_seen_unix-missing", _stream("last_seen_unix", ABSENT)),
    ("written_unix-text", _top("written_unix", "x")),
    ("written_unix-beyond-float", _top("written_unix", 10 ** 400)),  # TypeError from np.isfinite before
    ("last_t-nan", _stream("last_t", math.nan)),
    ("last_t-minus-infinity", _stream("last_t", -math.inf)),  # was restored as the stream's clock before
    ("last_t-1e300", _stream("last_t", 1e300)),
    ("last_t-integer-beyond-the-horizon", _stream("last_t", 10 ** 30)),
    ("anomaly-null", _stream("anomaly", None)),
]


@pytest.mark.parametrize("edit", [pytest.param(edit, id=case) for case, edit in TOLERATED])
def test_tolerated_fields_restore_and_a_bad_clock_is_forgotten(valid, tmp_path, edit):
    bundle, meta, arrays = valid
    edited, _ = edit(copy.deepcopy(meta), arrays)
    _write(tmp_path, edited, arrays)
    service = _service(_config(tmp_path, bundle))
    assert list(service.streams) and set(service.streams) == {"a", "b"}
    last_t = edited["streams"][0]["last_t"]
    clock = service.streams["a"].last_t
    if math.isfinite(last_t) and last_t < T0 + 1e6:
        assert clock == last_t
    else:
        assert clock is None, clock  # restored_clock_in_future, or a clock that is no clock
    _step_every_stream(service, tmp_path)


def test_a_valid_snapshot_restores_bit_for_bit(valid, tmp_path):
    """The checks take nothing from a snapshot the service wrote (a guard: this passes before the change too)."""
    bundle, meta, arrays = valid
    _write(tmp_path, meta, arrays)
    service = _service(_config(tmp_path, bundle))
    ids = [entry["id"] for entry in meta["streams"]]
    assert set(service.streams) == set(ids)
    rows = service.pool.rows_of(ids)
    for name, array in service.pool.state.items():
        assert array[rows].tobytes() == arrays[f"state.{name}"].tobytes()
    assert service.forecasts[rows].tobytes() == arrays["forecast"].tobytes()
    for k, entry in enumerate(meta["streams"]):
        assert service.pool.steps_of(entry["id"]) == entry["steps"]
        assert service.since_reset[rows[k]] == entry["since_reset"]
        assert service.streams[entry["id"]].last_t == entry["last_t"]
        assert service.bank.to_dict(int(rows[k])) == entry["anomaly"]
    assert service._sunk == (meta["sunk"], meta["sink_positions"])
    assert service._replayed == [(u["seq"], u["records"]) for u in meta["unsettled"]]


def _step_every_stream(service, folder: Path) -> None:
    """What comes after a start: the records owed re-sent to the sinks, one sample per restored stream."""
    from edge_runtime.service.sinks import open_sinks

    service.sinks = open_sinks(service.config.sinks)
    try:
        service._emit_replayed()
        values = tuple(np.asarray(service.model.manifest.normalization["mean"], np.float64))
        service.process([Sample(stream, max(T0 + 100, info.last_t or 0.0) + 1.0, values, "test", 0.0)
                         for stream, info in service.streams.items()])
    finally:
        for sink in service.sinks:
            sink.close()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 64, 2 ** 64) | st.floats()
    | st.sampled_from([0, -1, 2 ** 62, 2 ** 62 + 1, 10 ** 30, 10 ** 400, 1.0, "a", "b", "../x", "a\n", ""])
    | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["active", "quiet_steps", "primed", "still_seen", "last_z", "mean_change", "seq", "records",
                         "jsonl", "type", "id", "t", "event"]) | st.text(max_size=8), inner, max_size=5),
    max_leaves=10)
STREAM_FIELDS = ["id", "steps", "since_reset", "last_t", "last_seen_unix", "anomaly"]
META_FIELDS = ["streams", "wal_seq", "sunk", "sink_positions", "unsettled", "written_unix"]
TARGETS = st.tuples(st.integers(0, 1), st.sampled_from(STREAM_FIELDS)) | st.tuples(st.none(),
                                                                                     st.sampled_from(META_FIELDS))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=TARGETS, value=st.just(ABSENT) | JSON)
def test_any_json_in_one_field_starts_sane_or_is_refused_in_one_line(valid, tmp_path, target, value):
    from edge_runtime.service.service import ServiceError

    bundle, meta, arrays = valid
    folder = tmp_path / f"example-{next(_EXAMPLES)}"
    k, key = target
    edit = _top(key, value) if k is None else _stream(key, value, k)
    path = _write(folder, *edit(copy.deepcopy(meta), arrays))
    before = path.read_bytes()
    try:
        service = _service(_config(folder, bundle))
    except ServiceError as e:
        assert "\n" not in str(e) and str(path) in str(e), str(e)
        assert path.read_bytes() == before
        event("refused")
        return
    event("started")
    for stream, info in service.streams.items():
        assert STREAM_ID.match(stream), stream  # what the live input accepts (see lines.STREAM_ID)
        steps = service.pool.steps_of(stream)
        assert type(steps) is int and steps >= 0
        assert info.last_t is None or math.isfinite(info.last_t)
    assert (service.since_reset >= 0).all()
    _step_every_stream(service, folder)


_EXAMPLES = itertools.count()
