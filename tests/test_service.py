"""The edge service: config, parsing, batched steps, snapshots, TCP flood, serial, time policy.

The service runs as a real subprocess (`python -m edge_runtime serve`) with the
tflite_runtime interpreter, fed over real sockets and a real pty pair.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import run_isolated
from edge_runtime.service.config import ConfigError, parse_config
from edge_runtime.service.lines import LineSplitter, Rejection, Reset, Sample, parse
from service_helpers import ServiceProcess, free_port, read_jsonl, wait_for, write_config
from traffic import mixed_traffic, sensor_value


# -- config and parsing (no model needed) -------------------------------------------------------
def _config(text: str):
    return parse_config(text, Path("/srv/edge/edge.toml"))


BASE = 'bundle = "b"\nstate_dir = "s"\n[sources.tcp]\nport = 7000\n[sinks.jsonl]\npath = "out.jsonl"\n'


def test_config_resolves_paths_and_fills_defaults():
    c = _config(BASE)
    assert c.bundle == Path("/srv/edge/b") and c.state_dir == Path("/srv/edge/s")
    assert c.sources["tcp"].host == "127.0.0.1" and c.sources["tcp"].port == 7000
    assert c.sinks["jsonl"].path == "/srv/edge/out.jsonl"
    assert c.streams.max_streams == 256 and c.snapshot.interval_s == 10.0


@pytest.mark.parametrize("text, message", [
    (BASE + "[streams]\nmax_stream = 3\n", "[streams]: unknown key 'max_stream'"),
    (BASE + "bundel = 'x'\n", "unknown key 'bundel'"),  # top level, after a table: TOML puts it in [sinks.jsonl]
    ('bundle = "b"\nstate_dir = "s"\nsnapshots = 1\n[sources.tcp]\n[sinks.jsonl]\n', "unknown key 'snapshots'"),
    (BASE + "[sources.udp]\nport = 1\n", "[sources]: unknown kind 'udp'"),
    (BASE + "[streams]\nmax_gap_s = 'long'\n", "[streams].max_gap_s: should be float, got 'long'"),
    ('state_dir = "s"\n[sources.tcp]\n[sinks.jsonl]\n', "'bundle' is required"),
    ('bundle = "b"\nstate_dir = "s"\n[sinks.jsonl]\n', "no [sources.*] table"),
    (BASE + "[sources.mqtt]\ntopic = 'sensors/#'\n", "topic needs exactly one '+' level"),
    ("bundle = [", "not valid TOML"),
])
def test_config_errors_name_the_key(text, message):
    with pytest.raises(ConfigError) as e:
        _config(text)
    assert message in str(e.value)


@pytest.mark.parametrize("line, reason", [
    (b'\xff\xfe garbage', "binary"), (b"s1,1.0\x00,2,3", "binary"), (b"{nope", "malformed"),
    (b"s1,2", "malformed"), (b'{"id": "s1", "t": 1}', "malformed"), (b"bad id,1,2,3", "bad_id"),
    (b"s1,noon,2,3", "bad_timestamp"), (b'{"id":"s1","t":1,"values":[1]}', "wrong_channels"),
    (b"s1,1,2,3,4", "wrong_channels"), (b"s1,1,warm,3", "non_numeric"),
    (b'{"id":"s1","t":1,"values":["2",3]}', "non_numeric"), (b'{"id":"s1","t":1,"values":[true,3]}', "non_numeric"),
    (b"s1,1,nan,3", "non_finite"), (b'{"id":"s1","t":1,"values":[Infinity,3]}', "non_finite"),
    (b"s1,inf,2,3", "bad_timestamp"), (b'{"id":"s1\\n","t":1,"values":[2,3]}', "bad_id"),
])
def test_each_bad_line_gets_its_reason(line, reason):
    item = parse(line, 2, "test", 0.0)
    assert isinstance(item, Rejection) and item.reason == reason, item


def test_good_lines_parse_in_both_forms():
    a = parse(b"s1, 12.5, 20.1, 3", 2, "test", 1.0)
    b = parse(b'{"id": "s1", "t": 12.5, "values": [20.1, 3]}', 2, "test", 1.0)
    assert isinstance(a, Sample) and (a.stream, a.t, a.values) == ("s1", 12.5, (20.1, 3.0))
    assert (b.stream, b.t, b.values) == (a.stream, a.t, a.values)
    assert isinstance(parse(b'{"id": "s1", "reset": true}', 2, "test", 0.0), Reset)
    mqtt = parse(b"12.5,20.1,3", 2, "mqtt", 0.0, stream="s9")
    assert (mqtt.stream, mqtt.t, mqtt.values) == ("s9", 12.5, (20.1, 3.0))
    assert parse(b"   \r", 2, "test", 0.0) is None


def test_line_splitter_reports_an_oversized_line_once_and_keeps_memory_bounded():
    splitter = LineSplitter(16)
    out = splitter.feed(b"a,1,2,3\n" + b"x" * 100)
    out += splitter.feed(b"y" * 10_000)  # still the same line: not reported again, nothing kept
    assert len(splitter._buffer) <= 16
    out += splitter.feed(b"zz\nb,2,3,4\npartial")
    assert out == [b"a,1,2,3", None, b"b,2,3,4"]
    assert splitter.flush() == [b"partial"]


# -- batched step --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["tflite_runtime", "ai_edge_litert"])
def test_batched_step_equals_one_session_per_stream(fixture_bundles, backend):
    """Tolerance 0: the companion is the same graph and XNNPACK computes each row alike (measured: equal
    bit for bit at 3, 64 and 256 streams under both runtimes). Streams join at different times."""
    _, bundle = fixture_bundles["lstm"]
    done = run_isolated(f"""
        import json, numpy as np, edge_runtime
        from edge_runtime.pool import StreamPool
        model = edge_runtime.load({str(bundle)!r}, backend={backend!r})
        pool = StreamPool(model, max_streams=40, batched=True, max_batch=16)
        sessions, worst, rng = {{}}, 0.0, np.random.default_rng(0)
        for t in range(60):
            active = [k for k in range(40) if k <= t]          # one more stream each step
            xs = {{f"s{{k}}": [20 + k * 0.1 + 0.2 * np.sin(t / 7 + k), 4 + 0.1 * k] for k in active}}
            together = pool.step_many(xs)
            for sid, x in xs.items():
                alone = sessions.setdefault(sid, model.session()).step(x)
                worst = max(worst, float(np.max(np.abs(together[sid] - alone))))
        pool.reset("s3")
        fresh = model.session()
        again = pool.step_many({{"s3": [20.3, 4.3], "s4": [20.4, 4.4]}})["s3"]
        print(json.dumps({{"worst": worst, "reset_equal": float(np.max(np.abs(again - fresh.step([20.3, 4.3])))),
                          "batched": pool.batched is not None, "buckets": sorted(pool.batched._buckets),
                          "steps": pool.steps_of("s0")}}))
    """)
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["batched"] and r["buckets"] == [2, 4, 8, 16]
    assert r["worst"] == 0.0 and r["reset_equal"] == 0.0
    assert r["steps"] == 60


def test_a_bundle_without_batched_model_falls_back_and_a_tampered_one_is_refused(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["gru"]
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    batched_file = manifest["variants"][0]["batched"]["file"]
    (copy / batched_file).write_bytes((copy / batched_file).read_bytes()[:-1] + b"\0")
    plain = next(v["name"] for v in manifest["variants"] if "batched" not in v)  # a variant without a companion
    (copy / "manifest.json").write_text(json.dumps(manifest))
    done = run_isolated(f"""
        import edge_runtime
        from edge_runtime.pool import StreamPool
        try:
            StreamPool(edge_runtime.load({str(copy)!r}), 4)
        except edge_runtime.BundleError as e:
            print("refused:", e)
        pool = StreamPool(edge_runtime.load({str(copy)!r}, variant={plain!r}), 4)
        print("fallback:", pool.batched is None, len(pool.step_many({{"a": [20, 4], "b": [21, 4]}})))
        try:
            StreamPool(edge_runtime.load({str(copy)!r}, variant={plain!r}), 4, batched=True)
        except edge_runtime.BundleError as e:
            print("required:", e)
    """)
    assert done.returncode == 0, done.stderr
    assert f"refused: {copy / batched_file}: sha256 mismatch" in done.stdout
    assert "fallback: True 2" in done.stdout
    assert "required:" in done.stdout and "has no batched step model" in done.stdout


# -- the service as a process --------------------------------------------------------------------
def _send_lines(port: int, payloads, chunk: int = 200) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        for i in range(0, len(payloads), chunk):
            s.sendall(b"".join(p + b"\n" for p in payloads[i:i + chunk]))


def test_ten_thousand_malformed_lines_over_tcp_every_valid_sample_once(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["lstm"]
    traffic = mixed_traffic(streams=10, per_stream=300, bad=10500, seed=1)
    config = write_config(tmp_path, bundle, f"[sources.tcp]\nport = {free_port()}\n",
                          '[sinks.jsonl]\npath = "out.jsonl"\n', "[streams]\nmax_streams = 10\n")
    service = ServiceProcess(config)
    port = service.wait_running()["sources"]["tcp"]["port"]
    _send_lines(port, [p for _, p in traffic.messages])
    wait_for(lambda: service.counters().get("samples") == len(traffic.valid), 60, what="the valid samples")
    # then a second connection: one megabyte of garbage without a newline, then a valid line
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(bytes(range(256)).replace(b"\n", b"") * 4200 + b"\ns0,5000,20,4\n")
    traffic.expected["oversized"] += 1
    expected_total = sum(traffic.expected.values())
    wait_for(lambda: service.counters().get("samples") == len(traffic.valid) + 1
             and sum(service.counters()["rejected"].values()) == expected_total, 60, what="all lines counted")
    assert service.proc.poll() is None  # still serving
    assert service.stop() == 0
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert {k: v for k, v in status["counters"]["rejected"].items() if v} == dict(traffic.expected)
    # what start-up loaded is out of the collector's sight (a full collection walked it: 19-26 ms a pause)
    assert status["gc"]["frozen_objects"] > 10_000, status["gc"]
    # the collector's time since running, per generation, and its longest pause (thousands of samples: some)
    assert len(status["gc"]["seconds"]) == 3 and status["gc"]["seconds"][0] > 0, status["gc"]
    assert 0 < status["gc"]["longest_ms"] <= sum(status["gc"]["seconds"]) * 1e3 + 1e-3, status["gc"]
    records, torn = read_jsonl(tmp_path / "out.jsonl")
    seen = [(r["id"], r["t"]) for r in records]
    assert torn == 0 and len(seen) == len(set(seen))  # exactly once
    assert set(seen) == traffic.valid | {("s0", 5000.0)}
    assert len(service.log_events("rejected")) > 0  # logged (rate-limited, the rest summarized)


def test_serial_port_through_a_pty_pair(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["lstm"]
    controller, device = os.openpty()
    config = write_config(tmp_path, bundle, f'[sources.serial]\nport = "{os.ttyname(device)}"\nbaudrate = 9600\n',
                          '[sinks.jsonl]\npath = "out.jsonl"\n')
    service = ServiceProcess(config)
    try:
        service.wait_running()
        wait_for(lambda: service.log_events("serial_opened"), 60, what="serial port opened")
        lines = [f"p1,{100 + k},{sensor_value(0, k)[0]},{sensor_value(0, k)[1]}".encode() for k in range(50)]
        garbage = [b"\x00\x13\xfe\xff" * 8, b"p1,150,20", b"p1,151,hot,4", b"x" * 5000]
        os.write(controller, b"\n".join(lines[:25] + garbage + lines[25:]) + b"\n")
        wait_for(lambda: service.counters().get("samples") == 50, 30, what="50 serial samples")
        rejected = service.counters()["rejected"]
        assert (rejected["binary"], rejected["wrong_channels"], rejected["non_numeric"], rejected["oversized"]) == \
               (1, 1, 1, 1)
        assert service.stop() == 0
    finally:
        os.close(controller)
        os.close(device)
    records, _ = read_jsonl(tmp_path / "out.jsonl")
    assert [r["t"] for r in records] == [100.0 + k for k in range(50)]
    assert [r["step"] for r in records] == list(range(1, 51))


def test_gaps_reset_order_is_enforced_and_sigusr1_reports(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["lstm"]
    config = write_config(tmp_path, bundle, "[sources.tcp]\nport = 0\n", '[sinks.jsonl]\npath = "out.jsonl"\n',
                          "[streams]\nmax_gap_s = 5.0\nwarmup_steps = 2\n[status]\ninterval_s = 60.0\n")
    service = ServiceProcess(config)
    port = service.wait_running()["sources"]["tcp"]["port"]
    ts = [0, 1, 2, 3, 2.5, 3, 100, 101, 102]  # 2.5 out of order, 3 again a duplicate, 100: a 97 s gap
    _send_lines(port, [f"g,{t},{20 + t / 100},4".encode() for t in ts] + [b'{"id": "g", "reset": true}',
                                                                         b"g,103,21,4"])
    wait_for(lambda: len(read_jsonl(tmp_path / "out.jsonl")[0]) == 8, 60, what="8 forecasts")
    before = service.status()["updated_unix"]
    service.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: service.log_events("counters"), 60, what="counters logged on SIGUSR1")
    assert service.status()["updated_unix"] > before  # status.json rewritten at once (interval is 60 s)
    counters = service.log_events("counters")[-1]["counters"]
    assert counters["rejected"]["out_of_order"] == 1 and counters["rejected"]["duplicate"] == 1
    assert counters["resets"] == {"gap": 1, "requested": 1}
    assert service.stop() == 0
    records, _ = read_jsonl(tmp_path / "out.jsonl")
    assert [(r["t"], r["step"], r["warm"]) for r in records] == [
        (0, 1, False), (1, 2, False), (2, 3, True), (3, 4, True),
        (100, 1, False), (101, 2, False), (102, 3, True), (103, 1, False)]
    assert records[4]["residual"] is None  # after a reset there is no forecast to compare with
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    for key in ("state", "pid", "started_unix", "updated_unix", "bundle", "streams", "counters", "latency_us",
                "snapshot"):
        assert key in status
    assert set(status["bundle"]) >= {"path", "name", "variant", "sha256"}
    assert status["latency_us"]["p50"] > 0 and status["snapshot"]["steps"] == 1  # g: 1 step since its reset


def test_another_bundles_snapshot_is_refused_unless_told(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["lstm"]
    other = tmp_path / "other-bundle"
    shutil.copytree(bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["name"] = "retrained"
    (other / "manifest.json").write_text(json.dumps(manifest))
    sources, sinks = "[sources.stdin]\n", '[sinks.jsonl]\npath = "out.jsonl"\n'
    first = ServiceProcess(write_config(tmp_path, bundle, sources, sinks), stdin=subprocess.PIPE)
    first.proc.communicate(b"a,1,20,4\na,2,20.1,4\n", timeout=60)
    assert first.proc.returncode == 0
    snapshot = tmp_path / "state" / "snapshot.npz"
    assert snapshot.exists()
    refused = ServiceProcess(write_config(tmp_path, other, sources, sinks), stdin=subprocess.PIPE)
    refused.proc.communicate(b"", timeout=60)
    assert refused.proc.returncode == 2
    assert "was taken with bundle 'tiny-lstm-level-delta'" in refused.logs()
    assert "Set fresh_start = true in the config or pass --fresh" in refused.logs()
    assert snapshot.exists()  # a refused snapshot is left alone
    told = ServiceProcess(write_config(tmp_path, other, sources, sinks, "fresh_start = true"),
                          stdin=subprocess.PIPE)
    told.proc.communicate(b"a,3,20,4\n", timeout=60)
    assert told.proc.returncode == 0 and told.log_events("snapshot_discarded")
    records, _ = read_jsonl(tmp_path / "out.jsonl")
    assert [r["step"] for r in records] == [1, 2, 1]  # the other bundle's run started cold


def test_stdin_and_a_followed_file(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["gru"]
    log_file = tmp_path / "sensor.log"
    log_file.write_text("f,1,20,4\nf,2,20.1,4\n")
    config = write_config(tmp_path, bundle, '[sources.file]\npath = "sensor.log"\nfollow = true\n',
                          '[sinks.jsonl]\npath = "out.jsonl"\n')
    service = ServiceProcess(config)
    service.wait_running()
    wait_for(lambda: service.counters().get("samples") == 2, 60, what="2 samples from the file")
    with open(log_file, "a") as f:
        f.write("f,3,20.2,")  # half a line: waits for the rest
        f.flush()
        wait_for(lambda: (service.status() or {}).get("sources", {}).get("file", {}).get("bytes_read")
                 == log_file.stat().st_size, 60, what="the service to read the half line")
        f.write("4\nf,4,20.3,4\n")
    wait_for(lambda: service.counters().get("samples") == 4, 60, what="lines appended later")
    assert service.counters()["rejected"]["wrong_channels"] == 0
    assert service.stop() == 0


def test_the_example_config_parses():
    from edge_runtime.service.config import read_config

    from conftest import ROOT

    c = read_config(ROOT / "deploy" / "edge.example.toml")
    assert set(c.sources) == {"tcp"} and set(c.sinks) == {"jsonl"}
    assert c.state_dir == Path("/var/lib/edge-rnn") and c.streams.max_gap_s == 300.0


def test_the_service_imports_nothing_heavy():
    done = run_isolated("""
        import json, sys
        import edge_runtime.service.service, edge_runtime.service.sources, edge_runtime.service.sinks
        import edge_runtime.pool, edge_runtime.batched, paho.mqtt.client, serial
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow", "train", "convert"))
        print(json.dumps(heavy))
    """)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_a_service_a_test_left_running_is_killed_after_it(fixture_bundles, tmp_path):
    """conftest's no_service_outlives_its_test calls kill_leftovers after every test: a service a failing
    test never stopped is gone before the next test starts."""
    import service_helpers

    _, bundle = fixture_bundles["lstm"]
    configs = [write_config(tmp_path / name, bundle, "[sources.stdin]\n", '[sinks.jsonl]\npath = "out.jsonl"\n')
               for name in ("ended", "left")]
    ended, left = ServiceProcess(configs[0], stdin=subprocess.PIPE), ServiceProcess(configs[1], stdin=subprocess.PIPE)
    ended.proc.stdin.close()
    assert ended.proc.wait(60) == 0  # ended by its input: not a leftover
    left.wait_running()
    assert service_helpers.kill_leftovers() == 1
    assert left.proc.poll() is not None and service_helpers.STARTED == []
