"""Hostile inputs that used to stop a source or poison a stream (issue 14), and the line parser's fuzz test.

- One input must never stop a source: a JSON timestamp of 401 digits raised OverflowError in the
  reader thread (the TCP connection, stdin or a followed file then stopped for good).
- One value must never poison a stream: 1e308 is finite but turned the state to NaN for good; one
  t of 1e300 made every later sample out_of_order; `run` printed NaN, which is not JSON.
"""
from __future__ import annotations

import json
import socket
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import IN_PROCESS_BACKEND, run_cli
from edge_runtime.bounds import value_bounds
from edge_runtime.service.lines import REASONS, Rejection, Reset, Sample, parse
from service_helpers import ServiceProcess, free_port, read_jsonl, wait_for, write_config

HUGE_T = b'{"id": "p", "t": ' + b"9" * 401 + b', "values": [20, 4]}'
BOUNDS = value_bounds({"mean": [20.0, 4.0], "std": [1.0, 2.0]})  # (low, high) per channel, K = 1000
FORECAST_TOLERANCE = 1e-5  # same float32 model, same inputs: only the batch layout may differ


def _strict_json(line: str):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(line, parse_constant=refuse)


# -- the parser -------------------------------------------------------------------------------------
def test_huge_and_out_of_range_numbers_are_counted_rejections():
    assert parse(HUGE_T, 2, "t", 0.0).reason == "bad_timestamp"
    assert parse(b"p,1," + b"9" * 401 + b",4", 2, "t", 0.0, bounds=BOUNDS).reason == "non_finite"
    rejected = parse(b'{"id": "p", "t": 1, "values": [1e308, 4]}', 2, "t", 0.0, bounds=BOUNDS)
    assert rejected.reason == "out_of_range" and "value 0" in rejected.detail
    assert parse(b"p,1,20,-3000", 2, "t", 0.0, bounds=BOUNDS).reason == "out_of_range"  # 4 - 1000 * 2 = -1996
    assert isinstance(parse(b"p,1,900,1900", 2, "t", 0.0, bounds=BOUNDS), Sample)  # unusual, not absurd


def _parses_to_one_thing(data: bytes, stream) -> None:
    item = parse(data, 2, "fuzz", 0.0, stream=stream, bounds=BOUNDS)
    assert item is None or isinstance(item, (Sample, Reset, Rejection))
    if isinstance(item, Rejection):
        assert item.reason in REASONS and item.detail
    if isinstance(item, Sample):
        assert len(item.values) == 2 and all(low <= v <= high for v, (low, high) in zip(item.values, BOUNDS))


# bytes that look like lines: raw bytes, and text built from the characters a line is made of
_LINE_TEXT = st.text(alphabet=st.sampled_from(list('{}[]":,.-+eE0123456789 idtvaluesrNnIfy9\\\x00é')), max_size=200)
_LINES = st.one_of(st.binary(max_size=300), _LINE_TEXT.map(str.encode),
                   st.builds(lambda t, v: json.dumps({"id": "s", "t": t, "values": v}).encode(),
                             st.one_of(st.integers(), st.integers(10**300, 10**500), st.floats(), st.text(max_size=5)),
                             st.lists(st.one_of(st.integers(), st.floats(), st.booleans()), max_size=3)))
_STREAMS = st.one_of(st.none(), st.just("s1"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_LINES, _STREAMS)
def test_fuzz_any_bytes_parse_to_one_item_never_an_exception(data, stream):
    _parses_to_one_thing(data, stream)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_LINES, _STREAMS)
def test_fuzz_ten_thousand_examples(data, stream):
    _parses_to_one_thing(data, stream)


# -- the service --------------------------------------------------------------------------------------
def _good(stream: str, k: int) -> bytes:
    return f"{stream},{k},{20 + 0.01 * k:.4f},{4 + 0.02 * k:.4f}".encode()


def _serve_tcp(bundle, tmp_path, lines: list[bytes], good: int) -> tuple[ServiceProcess, dict]:
    """Send `lines` on one TCP connection; wait for `good` samples; stop; (service, rejected counts)."""
    config = write_config(tmp_path, bundle, f"[sources.tcp]\nport = {free_port()}\n",
                          '[sinks.jsonl]\npath = "out.jsonl"\n')
    service = ServiceProcess(config)
    port = service.wait_running()["sources"]["tcp"]["port"]
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"".join(line + b"\n" for line in lines))
        wait_for(lambda: service.counters().get("samples") == good, 60, what=f"all {good} good samples")
    rejected = {k: v for k, v in service.counters()["rejected"].items() if v}
    assert service.stop() == 0
    return service, rejected


def test_a_tcp_connection_goes_on_after_a_401_digit_timestamp(fixture_bundles, tmp_path):
    lines = [_good("p", 1), _good("p", 2), HUGE_T, _good("p", 3), _good("p", 4)]
    _, rejected = _serve_tcp(fixture_bundles["lstm"][1], tmp_path, lines, good=4)
    assert rejected == {"bad_timestamp": 1}
    records, _ = read_jsonl(tmp_path / "out.jsonl")
    assert [r["t"] for r in records] == [1.0, 2.0, 3.0, 4.0]


def test_1e308_and_a_1e300_timestamp_do_not_poison_the_stream(fixture_bundles, tmp_path):
    """Stream p gets a 1e308 value and a t of 1e300 among its lines; stream c gets the same good lines
    only. Both are rejected with their reasons, and p's forecasts equal c's (finite, none missing)."""
    lines = []
    for k in range(1, 41):
        lines += [_good("p", k), _good("c", k)]
        if k == 10:
            lines.append(b'{"id": "p", "t": 10.5, "values": [1e308, 4]}')
        if k == 20:
            lines.append(b"p,1e300,20,4")
    _, rejected = _serve_tcp(fixture_bundles["lstm"][1], tmp_path, lines, good=80)
    assert rejected == {"out_of_range": 1, "future_timestamp": 1}
    records, torn = read_jsonl(tmp_path / "out.jsonl")
    by_stream = {s: {r["t"]: r["prediction"] for r in records if r["id"] == s} for s in ("p", "c")}
    assert torn == 0 and sorted(by_stream["p"]) == sorted(by_stream["c"]) == [float(k) for k in range(1, 41)]
    for t, forecast in by_stream["c"].items():
        assert by_stream["p"][t] == pytest.approx(forecast, abs=FORECAST_TOLERANCE), t


def test_stdin_goes_on_after_a_401_digit_timestamp(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["gru"]
    config = write_config(tmp_path, bundle, "[sources.stdin]\n", '[sinks.jsonl]\npath = "out.jsonl"\n')
    service = ServiceProcess(config, stdin=subprocess.PIPE)
    service.proc.stdin.write(b"\n".join([_good("p", 1), HUGE_T, _good("p", 2), _good("p", 3)]) + b"\n")
    service.proc.stdin.close()
    assert service.proc.wait(60) == 0
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["counters"]["samples"] == 3 and status["counters"]["rejected"]["bad_timestamp"] == 1


def test_a_followed_file_goes_on_after_a_401_digit_timestamp(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["gru"]
    log_file = tmp_path / "sensor.log"
    log_file.write_bytes(_good("f", 1) + b"\n" + HUGE_T.replace(b'"p"', b'"f"') + b"\n")
    config = write_config(tmp_path, bundle, '[sources.file]\npath = "sensor.log"\nfollow = true\n',
                          '[sinks.jsonl]\npath = "out.jsonl"\n')
    service = ServiceProcess(config)
    service.wait_running()
    wait_for(lambda: service.counters().get("rejected", {}).get("bad_timestamp") == 1, 60, what="the rejection")
    with open(log_file, "ab") as f:
        f.write(_good("f", 2) + b"\n" + _good("f", 3) + b"\n")
    wait_for(lambda: service.counters().get("samples") == 3, 60, what="lines appended after the bad one")
    assert service.stop() == 0


# -- run ----------------------------------------------------------------------------------------------
def test_run_never_prints_nan_and_names_the_absurd_row(fixture_bundles):
    bundle = str(fixture_bundles["gru"][1])
    csv_text = "index,indoor,outdoor\n1,20.5,9.6\n2,1e308,9.6\n3,20.6,9.5\n4,20.7,9.4\n"
    stopped = run_cli("edge_runtime", "run", bundle, "--input", "-", stdin=csv_text)
    assert stopped.returncode != 0 and "line 3" in stopped.stderr and "plausible range" in stopped.stderr
    assert [_strict_json(line)["index"] for line in stopped.stdout.splitlines()] == ["1"]
    skipped = run_cli("edge_runtime", "run", bundle, "--input", "-", "--skip-bad-rows", stdin=csv_text)
    assert skipped.returncode == 0 and "skipped" in skipped.stderr and "line 3" in skipped.stderr
    rows = [_strict_json(line) for line in skipped.stdout.splitlines()]
    assert [r["index"] for r in rows] == ["1", "3", "4"]


def test_a_poisoned_snapshot_is_healed_on_restore(fixture_bundles, tmp_path):
    """A snapshot taken before the bounds existed may hold a NaN state and a t of 1e300: on restore that
    stream restarts (state zeroed, clock forgotten) instead of staying blocked across restarts."""
    import numpy as np

    from edge_runtime.service.config import read_config
    from edge_runtime.service.service import Service

    # in this process (the full tier loads TensorFlow, beside which tflite_runtime cannot open a model)
    config = write_config(tmp_path, fixture_bundles["gru"][1], "[sources.stdin]\n", '[sinks.jsonl]\npath = "o"\n',
                          extra=f'backend = "{IN_PROCESS_BACKEND}"')
    service = Service(read_config(config))
    for stream in ("poisoned", "healthy"):
        service.pool.add(stream)
        service.streams[stream] = service._new_stream_info()
        service.streams[stream].last_t = 5.0
    service.streams["poisoned"].last_t = 1e300
    row = service.pool.rows_of(["poisoned"])[0]
    for array in service.pool.state.values():
        array[row] = np.nan
    service.write_snapshot()
    restored = Service(read_config(config))
    row = restored.pool.rows_of(["poisoned"])[0]
    assert all(np.isfinite(array[row]).all() for array in restored.pool.state.values())
    assert restored.streams["poisoned"].last_t is None and restored.streams["healthy"].last_t == 5.0
