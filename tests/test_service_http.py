"""The service's [http] side: /metrics read back with prometheus_client's own parser, the live page's
JSON, the loopback-only default, and (slow tier) the page in headless Debian chromium via Playwright.

The service runs as a real subprocess fed over a real TCP socket.
"""
from __future__ import annotations

import csv
import http.client
import json
import re
import shutil
import socket
import urllib.error
import urllib.request
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT
from deploy.device import metrics_lines
from service_helpers import ServiceProcess, wait_for, write_config
from traffic import mixed_traffic

TEMPERATURE_LOG = ROOT / "tests" / "fixture_bundles" / "temperature.test.csv"  # indoor, outdoor degC
SPIKE_C = 5.0  # degC added to one sample: ~100 residual stds of the tiny fixture models, far past the threshold


def _send_lines(port: int, payloads: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"".join(p + b"\n" for p in payloads))


def _get(port: int, path: str, host: str = "127.0.0.1") -> bytes:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as reply:
        return reply.read()


def _start(tmp_path, bundle, http: str = "[http]\nport = 0\n", streams: str = "") -> tuple[ServiceProcess, int, int]:
    config = write_config(tmp_path, bundle, "[sources.tcp]\nport = 0\n", '[sinks.jsonl]\npath = "out.jsonl"\n',
                          streams + http)
    service = ServiceProcess(config)
    status = service.wait_running()
    return service, status["sources"]["tcp"]["port"], status["http"]["port"]


def _scrape(port: int) -> dict:
    """{(metric sample name, frozenset of labels): value} of one /metrics scrape."""
    out = {}
    for family in text_string_to_metric_families(_get(port, "/metrics").decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _outside_address() -> str | None:
    """One of this machine's addresses that is not loopback (None if it has none)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent, the kernel only picks a route
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def spiked_lines(stream: str, count: int, spike_at: int, t0: float = 1000.0, dt: float = 0.02):
    """(CSV lines of the fixture's real temperature log, SPIKE_C added to the room at sample spike_at; the spike's t).

    Real data, not a synthetic curve: a noiseless sine reads as a stuck sensor to the stillness check."""
    rows = list(csv.DictReader(TEMPERATURE_LOG.open()))[:count]
    lines = [f"{stream},{t0 + k * dt:.2f},{float(r['indoor']) + (SPIKE_C if k == spike_at else 0.0)},{r['outdoor']}"
             .encode() for k, r in enumerate(rows)]
    return lines, round(t0 + spike_at * dt, 2)


def test_metrics_counters_equal_what_was_sent_and_rejections_by_reason(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["lstm"]
    traffic = mixed_traffic(streams=6, per_stream=120, bad=400, seed=3)
    service, tcp_port, http_port = _start(tmp_path, bundle, "[http]\nport = 0\nmax_stream_labels = 4\n",
                                          "[streams]\nmax_streams = 6\n[snapshot]\ninterval_s = 0.5\n")
    _send_lines(tcp_port, [p for _, p in traffic.messages])
    wait_for(lambda: service.counters().get("samples") == len(traffic.valid)
             and sum(service.counters()["rejected"].values()) == sum(traffic.expected.values()), 60,
             what="every line counted")
    wait_for(lambda: service.status()["snapshot"]["written_unix"], 30, what="a snapshot")
    wait_for(lambda: service.counters()["sinks"]["jsonl"]["written"] >= len(traffic.valid), 30, what="the sink")
    status_counters = service.status()["counters"]  # before the scrape: the scrape's counts can only be higher
    metrics = _scrape(http_port)

    per_stream = Counter(stream for stream, _ in traffic.valid)  # s0..s5: 120 each
    samples = {dict(labels)["stream"]: v for (name, labels), v in metrics.items() if name == "edge_samples_total"}
    # the first 4 streams to arrive (s0..s3: the traffic sends each stream's first sample in order) keep their
    # label; s4 and s5 are counted together as _other
    assert samples == {"s0": 120, "s1": 120, "s2": 120, "s3": 120, "_other": 240}
    assert sum(samples.values()) == len(traffic.valid) == sum(per_stream.values())
    predictions = {dict(labels)["stream"]: v for (name, labels), v in metrics.items()
                   if name == "edge_predictions_total"}
    assert predictions == samples
    rejected = {dict(labels)["reason"]: v for (name, labels), v in metrics.items() if name == "edge_rejected_total"}
    assert {k: v for k, v in rejected.items() if v} == dict(traffic.expected)
    assert len(traffic.expected) >= 8  # the traffic did exercise most reasons
    # one sample-to-forecast observation per sample; the histogram's +Inf bucket is its count
    assert metrics[("edge_sample_to_forecast_seconds_count", frozenset())] == len(traffic.valid)
    assert metrics[("edge_sample_to_forecast_seconds_bucket", frozenset({("le", "+Inf")}))] == len(traffic.valid)
    assert metrics[("edge_step_seconds_count", frozenset())] >= 120  # at least one call per round of 6 streams
    assert metrics[("edge_streams", frozenset())] == 6
    # sink and connection counts, copied in by the main thread with each status write
    assert metrics[("edge_sink_written_total", frozenset({("sink", "jsonl")}))] >= len(traffic.valid)
    assert metrics[("edge_sink_failures_total", frozenset({("sink", "jsonl")}))] == 0
    # every fsync of the log and of the sink, timed: a histogram per file, its count the status' count or more
    for file, fsync in (("wal", status_counters["wal"]["fsync"]), ("jsonl", status_counters["sinks"]["jsonl"]["fsync"])):
        labels = frozenset({("file", file)})
        count = metrics[("edge_fsync_seconds_count", labels)]
        assert count >= fsync["count"] >= 1 and metrics[("edge_fsync_seconds_sum", labels)] > 0, (file, fsync)
        assert metrics[("edge_fsync_seconds_bucket", labels | {("le", "+Inf")})] == count
    assert metrics[("edge_stream_evictions_total", frozenset({("cause", "idle")}))] == 0
    assert metrics[("edge_queue_depth", frozenset())] == 0
    assert metrics[("process_resident_memory_bytes", frozenset())] > 10e6
    info = next(dict(labels) for (name, labels), _ in metrics.items() if name == "edge_bundle_info")
    assert info["variant"] == "float32" and len(info["sha256"]) == 64
    assert info["sha256"] == service.status()["bundle"]["sha256"]
    assert 0 <= metrics[("edge_snapshot_age_seconds", frozenset())] < 60
    assert 0 < metrics[("edge_snapshot_duration_seconds", frozenset())] < 10
    # make deploy-status's summary of the same text (deploy/device.py reads it on the device)
    summary = "\n".join(metrics_lines(_get(http_port, "/metrics").decode(), {"port": http_port}))
    assert f"edge_samples_total {len(traffic.valid)}" in summary and "edge_streams 6" in summary
    assert json.loads(summary.split("edge_rejected_total ", 1)[1]) == dict(traffic.expected)
    # the Grafana dashboard asks only for series this service exports
    dashboard = (ROOT / "deploy" / "grafana-dashboard.json").read_text()
    wanted = set(re.findall(r"\b((?:edge|process)_[a-z_]+)", dashboard))
    assert len(wanted) >= 10 and wanted <= {name for name, _ in metrics}, wanted - {name for name, _ in metrics}

    # loopback only by default: the same port on this machine's outside address refuses the connection
    outside = _outside_address()
    if outside is not None:
        with pytest.raises(OSError):
            socket.create_connection((outside, http_port), timeout=5).close()
    assert service.status()["http"]["host"] == "127.0.0.1"
    assert service.stop() == 0


def test_live_json_shows_the_stream_forecast_and_the_spike_as_one_anomaly_span(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["lstm"]
    service, tcp_port, http_port = _start(tmp_path, bundle)
    lines, spike_t = spiked_lines("room", 400, spike_at=250)
    _send_lines(tcp_port, lines)
    wait_for(lambda: service.counters().get("samples") == 400, 60, what="400 samples")
    reply = json.loads(_get(http_port, "/api/live?stream=room&n=300"))
    live = reply["live"]
    assert reply["streams"] == ["room"] and live["stream"] == "room"
    assert len(live["t"]) == 300 and live["t"][-1] == pytest.approx(1000 + 399 * 0.02)
    assert f"{live['value'][-1]}".encode() == lines[-1].split(b",")[2]
    assert live["threshold"] == 4.0 and live["next_forecast"] is not None
    # the forecast follows the sensor: away from the spike within 0.2 degC (~4 of the model's residual stds)
    calm = [abs(v - e) for t, v, e in zip(live["t"], live["value"], live["expected"]) if abs(t - spike_t) > 1]
    print("largest calm |sample - forecast| (degC):", max(calm))
    assert max(calm) < 0.2
    assert len(live["events"]) == 1, live["events"]
    start, end = live["events"][0]
    assert start == pytest.approx(spike_t) and end is not None and end > start
    assert max(live["score"]) > live["threshold"]
    assert reply["health"]["samples"] == 400 and reply["health"]["rss_bytes"] > 10e6
    # the page polls with after=<its newest t> and gets only what is newer
    newer = json.loads(_get(http_port, f"/api/live?stream=room&n=300&after={live['t'][-3]}"))["live"]
    assert (newer["full"], newer["t"], newer["value"]) == (False, live["t"][-2:], live["value"][-2:])
    assert _get(http_port, "/").startswith(b"<!doctype html>") and b"setInterval" in _get(http_port, "/live.js")
    assert service.stop() == 0


def test_a_polling_client_keeps_its_connection_and_idle_connections_beyond_the_cap_get_503(fixture_bundles, tmp_path):
    from edge_runtime.service.web import MAX_CONNECTIONS

    _, bundle = fixture_bundles["gru"]
    service, tcp_port, http_port = _start(tmp_path, bundle)
    _send_lines(tcp_port, spiked_lines("room", 50, spike_at=49)[0])
    wait_for(lambda: service.counters().get("samples") == 50, 60, what="50 samples")
    # what a browser's fetch does: one connection for every poll (HTTP/1.0 closed it after each answer)
    page = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    sockets = []
    for _ in range(3):
        page.request("GET", "/api/live?stream=room&n=10")
        reply = page.getresponse()
        assert reply.status == 200 and len(json.loads(reply.read())["live"]["t"]) == 10
        assert not reply.will_close, reply.getheaders()
        sockets.append(page.sock)
    assert page.sock is not None and all(s is sockets[0] for s in sockets)
    # connections that open and say nothing hold a thread each until their idle timeout: the cap bounds them
    threads = _threads(service.proc.pid)
    idle = [socket.create_connection(("127.0.0.1", http_port)) for _ in range(MAX_CONNECTIONS - 1)]
    try:
        # the server has taken every one of them (a thread each) before the next client knocks
        wait_for(lambda: _threads(service.proc.pid) >= threads + MAX_CONNECTIONS - 1, 30, what="31 handler threads")
        with socket.create_connection(("127.0.0.1", http_port), timeout=10) as extra:
            extra.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = extra.makefile("rb").read()
        assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(b"too many open connections: close one and retry\n")
        page.request("GET", "/api/live?stream=room&n=5")  # the kept connection is one of the 32: still served
        assert page.getresponse().read() and page.sock is sockets[0]
    finally:
        for s in idle:
            s.close()
    # closed connections give their slots back: a new client is served again
    wait_for(lambda: _get_or_none(http_port, "/metrics"), 30, what="a new connection served after the idle ones closed")
    page.close()
    assert service.stop() == 0


def _threads(pid: int) -> int:
    return int(open(f"/proc/{pid}/status").read().split("Threads:")[1].split()[0])


def _get_or_none(port: int, path: str) -> bytes | None:
    try:
        return _get(port, path)
    except urllib.error.HTTPError as e:
        assert e.code == 503, e
        return None


def test_http_off_unless_configured_and_bad_keys_refused(fixture_bundles, tmp_path):
    from pathlib import Path

    from edge_runtime.service.config import ConfigError, parse_config

    base = 'bundle = "b"\nstate_dir = "s"\n[sources.tcp]\nport = 7000\n[sinks.jsonl]\npath = "out.jsonl"\n'
    assert parse_config(base, Path("/srv/edge.toml")).http is None
    http = parse_config(base + "[http]\n", Path("/srv/edge.toml")).http
    assert (http.host, http.port, http.max_stream_labels) == ("127.0.0.1", 9464, 64)
    assert parse_config(base + '[http]\nhost = "0.0.0.0"\nallow_remote = true\n', Path("/srv/edge.toml")).http
    for bad, message in (("port = 70000", "port 0-65535"), ("listen = 1", "unknown key 'listen'"),
                         ("max_stream_labels = 0", "max_stream_labels >= 1"),
                         ('host = "0.0.0.0"', r"\[http\].host: '0.0.0.0' is reachable from other machines and "
                                              r"/metrics and the live page have no authentication"),
                         ('host = "::"', "reachable from other machines")):
        with pytest.raises(ConfigError, match=message):
            parse_config(base + f"[http]\n{bad}\n", Path("/srv/edge.toml"))


@pytest.mark.slow
def test_the_live_page_in_headless_chromium_draws_the_stream_and_shades_the_spike(fixture_bundles, tmp_path):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed (make test installs it: BROWSER_PACKAGES in the Makefile)"
    _, bundle = fixture_bundles["lstm"]
    service, tcp_port, http_port = _start(tmp_path, bundle)
    lines, spike_t = spiked_lines("room", 500, spike_at=350)
    _send_lines(tcp_port, lines[:400])
    wait_for(lambda: service.counters().get("samples") == 400, 60, what="400 samples")
    shot = ROOT / "reports" / "live-page.png"
    shot.parent.mkdir(exist_ok=True)
    with sync_playwright() as p:
        # --no-sandbox: chromium refuses to start as root with its sandbox (CI and this machine run as root)
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1040, "height": 720})
            page.goto(f"http://127.0.0.1:{http_port}/")
            page.wait_for_function("window.liveState && window.liveState.points >= 250", timeout=30_000)
            spans = json.loads(page.get_attribute("#chart", "data-spans"))
            assert page.get_attribute("#chart", "data-stream") == "room"
            assert len(spans) == 1 and spans[0][0] == pytest.approx(spike_t), spans
            # live: more samples arrive, the page picks them up on its own (it polls twice a second)
            updates = page.evaluate("window.liveState.updates")
            _send_lines(tcp_port, lines[400:])
            page.wait_for_function(f"window.liveState.updates >= {updates + 2} && "
                                   f"JSON.parse(document.querySelector('#chart').dataset.spans).length === 1 && "
                                   "document.querySelector('#health').textContent.includes('samples/s')",
                                   timeout=30_000)
            assert page.evaluate("window.liveState.error") is None
            assert page.evaluate("window.liveState.scores") > 200  # the residual score is drawn too
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    assert service.stop() == 0


def test_an_http_port_in_use_stops_the_start_with_a_message(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["gru"]
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = write_config(tmp_path, bundle, "[sources.tcp]\nport = 0\n", '[sinks.jsonl]\npath = "out.jsonl"\n',
                              f"[http]\nport = {port}\n")
        service = ServiceProcess(config)
        assert service.proc.wait(60) == 2
    assert f"[http] cannot listen on 127.0.0.1:{port}: Address already in use" in service.logs()
    assert service.status()["state"] == "failed"
