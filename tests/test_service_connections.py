"""TCP connections are capped and cannot exhaust the service (issue 14).

On the main branch before this file, each connection had a thread and a descriptor for as long as the client
liked: 1,100 idle connections under a 1,024 file limit starved new clients and made snapshot and status writes
fail (EMFILE). Now one selector thread serves at most `max_connections` clients; one more is closed at once
and counted, an idle client is closed after `idle_timeout_s` (which frees the slots a flood of idle
connections holds), and RLIMIT_NOFILE's soft limit is raised to the hard one at start.
"""
from __future__ import annotations

import resource
import socket
import time

from service_helpers import ServiceProcess, read_jsonl, wait_for, write_config

CAP = 50
FLOOD = 1100
IDLE_TIMEOUT_S = 60.0  # the flood test's: far longer than the flood takes (0.1 s measured, 6 s with SYN retries)


def _device_fd_limit() -> None:
    """In the service's child process: the 1,024 descriptors of a stock device, hard and soft."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def _room_for_the_flood() -> None:
    """This (test) process holds FLOOD client sockets at once: its own soft limit must allow them. A fresh
    Debian root starts processes at 1,024 soft (this machine's shells had more, which hid it); root may raise
    the hard limit too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FLOOD + 512  # the flood, pytest's own files and the service's pipes
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
        except ValueError:  # raising the hard limit needs CAP_SYS_RESOURCE
            raise AssertionError(f"this test holds {FLOOD} sockets and needs {wanted} open files; the hard "
                                 f"limit here is {hard} (raise it: ulimit -Hn {wanted})") from None


def _forecasts(path, stream: str) -> int:
    return sum(r["id"] == stream for r in read_jsonl(path)[0])


def test_more_idle_connections_than_the_cap_starve_nothing(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["lstm"]
    config = write_config(tmp_path, bundle, f"[sources.tcp]\nport = 0\nmax_connections = {CAP}\n"
                                            f"idle_timeout_s = {IDLE_TIMEOUT_S}\n",
                          '[sinks.jsonl]\npath = "out.jsonl"\n', "[snapshot]\ninterval_s = 0.2\n[status]\ninterval_s = 0.2\n")
    out = tmp_path / "out.jsonl"
    _room_for_the_flood()
    service = ServiceProcess(config, preexec_fn=_device_fd_limit)
    port = service.wait_running()["sources"]["tcp"]["port"]
    flood = []
    try:
        with socket.create_connection(("127.0.0.1", port)) as real:
            real.sendall(b"real,1,20,4\n")
            wait_for(lambda: _forecasts(out, "real") == 1, 60, what="the first forecast")
            for _ in range(FLOOD):
                flood.append(socket.create_connection(("127.0.0.1", port)))
            wait_for(lambda: service.counters().get("connections", {}).get("refused") == FLOOD - (CAP - 1), 60,
                     what="every connection over the cap refused")
            assert service.counters()["connections"]["open"] == CAP
            real.sendall(b"real,2,20.1,4\n")  # the client connected before the flood is still served
            wait_for(lambda: _forecasts(out, "real") == 2, 60, what="a forecast during the flood")
            flooded = time.time()
            wait_for(lambda: service.status()["updated_unix"] > flooded and
                     service.status()["snapshot"]["written_unix"] > flooded, 30,
                     what="status and snapshot written after the flood")
        assert not service.log_events("snapshot_failed") and not service.log_events("status_failed")
        assert service.log_events("fd_limit")[0]["soft"] == 1024
    finally:
        for conn in flood:
            conn.close()
    wait_for(lambda: service.counters()["connections"]["open"] == 0, 30, what="the flood's slots freed")
    with socket.create_connection(("127.0.0.1", port)) as after:
        after.sendall(b"after,1,20,4\n")
        wait_for(lambda: _forecasts(out, "after") == 1, 60, what="a forecast for a client after the flood")
    assert service.stop() == 0


def test_idle_clients_are_closed_and_make_room(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["gru"]
    config = write_config(tmp_path, bundle, "[sources.tcp]\nport = 0\nmax_connections = 3\nidle_timeout_s = 0.5\n",
                          '[sinks.jsonl]\npath = "out.jsonl"\n', "[status]\ninterval_s = 0.2\n")
    service = ServiceProcess(config)
    port = service.wait_running()["sources"]["tcp"]["port"]
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        wait_for(lambda: service.counters().get("connections", {}).get("idle_closed") == 3, 30,
                 what="the 3 idle clients closed")
        assert all(conn.recv(1) == b"" for conn in idle)  # closed by the service: end of stream
        with socket.create_connection(("127.0.0.1", port)) as late:
            late.sendall(b"late,1,20,4\n")
            wait_for(lambda: _forecasts(tmp_path / "out.jsonl", "late") == 1, 60, what="a forecast for a new client")
        assert service.counters()["connections"]["refused"] == 0
    finally:
        for conn in idle:
            conn.close()
    assert service.stop() == 0


def test_a_cap_above_the_descriptor_limit_is_refused_at_start(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["gru"]
    config = write_config(tmp_path, bundle, "[sources.tcp]\nport = 0\nmax_connections = 2000\n",
                          '[sinks.jsonl]\npath = "out.jsonl"\n')
    service = ServiceProcess(config, preexec_fn=_device_fd_limit)
    assert service.proc.wait(60) == 2
    assert "[sources.tcp].max_connections = 2000 needs 2064 file descriptors, the limit is 1024" in service.logs()


def test_acknowledgements_number_the_lines_that_carry_something_in_order(fixture_bundles, tmp_path):
    """ack = true: the n-th non-blank line (blank: nothing but whitespace once decoded) is answered "ack <n>"
    exactly once, in order, whether it was a sample, a reset or a rejection, and however the lines were
    split across reads (one acknowledgement per read, written as one "ack <n>" per line)."""
    _, bundle = fixture_bundles["lstm"]
    config = write_config(tmp_path, bundle, "[sources.tcp]\nport = 0\nack = true\n",
                          '[sinks.jsonl]\npath = "out.jsonl"\n', "[status]\ninterval_s = 0.2\n")
    blank = [b"", b"   \t", "\u00a0\u2003".encode()]  # spaces, a tab, Unicode spaces
    rejected = [b"x,y", b"\x0b", b"\xff\xfe"]  # malformed; a control character; not UTF-8
    lines = [line for c in range(5) for line in (
        b"a,%d,20,4" % (10 * c + 1), blank[0], blank[1], blank[2], b"a,%d,20.1,4" % (10 * c + 2), rejected[0],
        rejected[1], b"b,%d,21,3" % (10 * c + 1), rejected[2], b"a,%d,20.2,4" % (10 * c + 3), b"a,reset", b"",
        b"a,%d,20.3,4" % (10 * c + 4))]
    numbered = sum(line not in blank for line in lines)
    service = ServiceProcess(config)
    port = service.wait_running()["sources"]["tcp"]["port"]
    data = b"".join(line + b"\n" for line in lines)
    acks = []
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        for start in range(0, len(data), 37):  # reads that cut lines anywhere
            s.sendall(data[start:start + 37])
        buffer = b""
        while len(acks) < numbered:
            chunk = s.recv(4096)
            assert chunk, f"connection closed after {acks[-3:]}"
            buffer += chunk
            *whole, buffer = buffer.split(b"\n")
            acks += whole
    assert acks == [b"ack %d" % n for n in range(1, numbered + 1)]
    assert service.stop() == 0
    assert _forecasts(tmp_path / "out.jsonl", "a") == 20 and _forecasts(tmp_path / "out.jsonl", "b") == 5
