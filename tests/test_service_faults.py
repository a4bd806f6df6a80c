"""A source that fails is restarted or takes the service down; it never dies while status says running (issue 14).

On the main branch before this file: a reader thread that raised logged `source_failed` and ended, and the
service carried on with state "running" (stdin's failure even looked like the end of the input: exit 0); a port
already in use left status.json saying "starting" after the process had exited.
"""
from __future__ import annotations

import json
import socket
import subprocess

from service_helpers import ServiceProcess, wait_for, write_config


def _status(tmp_path) -> dict:
    return json.loads((tmp_path / "state" / "status.json").read_text())


def test_a_port_in_use_exits_2_with_one_line_and_status_says_failed(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["gru"]
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        service = ServiceProcess(write_config(tmp_path, bundle, f"[sources.tcp]\nport = {port}\n",
                                              '[sinks.jsonl]\npath = "out.jsonl"\n'))
        assert service.proc.wait(60) == 2
    error_lines = [line for line in service.logs().splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1
    assert error_lines[0].startswith(f"error: [sources.tcp] cannot listen on 127.0.0.1:{port}: Address already in use")
    assert "Traceback" not in service.logs()
    status = _status(tmp_path)
    assert status["state"] == "failed" and "Address already in use" in status["error"]


def test_a_reader_that_keeps_raising_is_restarted_then_stops_the_service(fixture_bundles, tmp_path):
    """stdin is open for writing only: every read raises OSError (EBADF) in the reader thread (a real fault)."""
    _, bundle = fixture_bundles["gru"]
    config = write_config(tmp_path, bundle, "[sources.stdin]\n", '[sinks.jsonl]\npath = "out.jsonl"\n',
                          "[input]\nmax_source_restarts = 2\n")
    with open(tmp_path / "write-only", "wb") as write_only:
        service = ServiceProcess(config, stdin=write_only)
        code = service.proc.wait(60)
    assert code == 1  # non-zero: systemd's Restart=on-failure brings the whole service back
    failures = service.log_events("source_failed")
    assert [f["restarts"] for f in failures] == [1, 2] and "Bad file descriptor" in failures[0]["error"]
    assert service.log_events("source_gave_up") and not service.log_events("inputs_finished")
    status = _status(tmp_path)
    assert status["state"] == "failed" and "stdin failed 3 times" in status["error"]
    assert status["counters"]["source_restarts"] == {"stdin": 2}
    assert status["sources"]["stdin"]["state"] == "failed"
    assert (tmp_path / "state" / "snapshot.npz").exists()  # the final snapshot was still written


def test_a_missing_input_file_is_a_failure_not_an_empty_input(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["gru"]
    config = write_config(tmp_path, bundle, '[sources.file]\npath = "nowhere.log"\n',
                          '[sinks.jsonl]\npath = "out.jsonl"\n', "[input]\nmax_source_restarts = 1\n")
    service = ServiceProcess(config, stdin=subprocess.DEVNULL)
    assert service.proc.wait(60) == 1
    assert "FileNotFoundError" in service.log_events("source_gave_up")[0]["error"]
    assert _status(tmp_path)["state"] == "failed"


def test_a_followed_file_that_cannot_open_yet_is_retried_and_status_stays_honest(fixture_bundles, tmp_path):
    """A followed file that is a folder at first: opening fails and is retried; then the file is read."""
    _, bundle = fixture_bundles["gru"]
    log_file = tmp_path / "sensor.log"
    log_file.mkdir()
    config = write_config(tmp_path, bundle, '[sources.file]\npath = "sensor.log"\nfollow = true\n',
                          '[sinks.jsonl]\npath = "out.jsonl"\n')
    service = ServiceProcess(config)
    service.wait_running()
    wait_for(lambda: service.log_events("file_missing"), 30, what="the open to fail")
    log_file.rmdir()
    log_file.write_text("f,1,20,4\nf,2,20.1,4\n")
    wait_for(lambda: service.counters().get("samples") == 2, 60, what="2 samples once the file is there")
    assert service.status()["state"] == "running"
    assert service.stop() == 0
    assert _status(tmp_path)["state"] == "stopped"
