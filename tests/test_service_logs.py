"""Logs have a rate limit per event and reason, with a "suppressed N" line (issue 14).

On the main branch before this file only `rejected` lines were limited: 500 connections logged 1,000
tcp_connected/tcp_closed lines, and a source failing in a loop logged every failure.
"""
from __future__ import annotations

import json
import socket
import time

from edge_runtime.service.log import DEFAULT_PER_S, flush_suppressed, log
from service_helpers import ServiceProcess, wait_for, write_config


def _records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_burst_of_one_kind_is_cut_to_the_limit_and_the_rest_counted(capsys):
    started = time.monotonic()
    for k in range(1000):
        log("warning", "burst_test", reason="a", k=k)
    log("warning", "burst_test", reason="b")  # another reason has its own budget
    seconds = int(time.monotonic()) - int(started) + 1  # the windows the burst touched (1, rarely 2)
    wait_for(lambda: int(time.monotonic()) != int(started) + seconds - 1, 5, what="the next second")
    flush_suppressed()
    records = _records(capsys.readouterr().err)
    logged = [r for r in records if r["event"] == "burst_test" and r["reason"] == "a"]
    suppressed = [r for r in records if r["event"] == "burst_test_suppressed"]
    assert len(logged) <= DEFAULT_PER_S * seconds
    assert len(logged) + sum(r["count"] for r in suppressed) == 1000  # every line logged or counted
    assert all(r["reason"] == "a" and r["level"] == "warning" for r in suppressed)
    assert [r["reason"] for r in records if r["event"] == "burst_test"].count("b") == 1


def test_a_connection_flood_logs_a_bounded_number_of_lines(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["gru"]
    config = write_config(tmp_path, bundle, "[sources.tcp]\nport = 0\n", '[sinks.jsonl]\npath = "out.jsonl"\n',
                          "[status]\ninterval_s = 0.2\n")
    service = ServiceProcess(config)
    port = service.wait_running()["sources"]["tcp"]["port"]
    started = time.time()
    for _ in range(500):
        socket.create_connection(("127.0.0.1", port)).close()
    wait_for(lambda: sum(r["count"] for r in service.log_events("tcp_closed_suppressed"))
             + len(service.log_events("tcp_closed")) == 500, 60, what="every close logged or counted")
    elapsed = time.time() - started
    assert service.stop() == 0
    for event in ("tcp_connected", "tcp_closed"):
        lines = service.log_events(event)
        assert len(lines) <= DEFAULT_PER_S * (elapsed + 2), (event, len(lines), elapsed)
        assert len(lines) + sum(r["count"] for r in service.log_events(f"{event}_suppressed")) == 500
