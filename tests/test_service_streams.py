"""Stream ids are bounded and expire (issue 14).

On the main branch before this file, 10,000 bogus stream ids filled `max_streams` for good: every later new id
(a real sensor included) was rejected as stream_limit, and the bogus ids were restored after every restart.
Now a stream silent for `idle_evict_s` is evicted (counted in counters.evicted.idle, not restored), and with the
pool full a new id evicts the least recently used stream silent for `evict_when_full_after_s`.
"""
from __future__ import annotations

import socket
import time

from service_helpers import ServiceProcess, read_jsonl, wait_for, write_config

IDLE_S = 2.0  # idle_evict_s of these tests: short, so the test waits seconds, not an hour
BOGUS = 10_000


def _send(port: int, lines: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"".join(line + b"\n" for line in lines))


def _sample(stream: str, t: float) -> bytes:
    return f"{stream},{t},{20 + 0.01 * t:.3f},4".encode()


def _predictions(path, stream: str) -> list[dict]:
    return [r for r in read_jsonl(path)[0] if r["id"] == stream]


def _config(tmp_path, bundle, idle_s: float, when_full_s: float):
    return write_config(tmp_path, bundle, "[sources.tcp]\nport = 0\n", '[sinks.jsonl]\npath = "out.jsonl"\n',
                        f"[streams]\nmax_streams = 50\nidle_evict_s = {idle_s}\n"
                        f"evict_when_full_after_s = {when_full_s}\n[snapshot]\ninterval_s = 0.2\n")


def test_ten_thousand_bogus_ids_expire_and_a_real_stream_is_served_before_and_after_a_restart(fixture_bundles,
                                                                                             tmp_path):
    _, bundle = fixture_bundles["lstm"]
    config = _config(tmp_path, bundle, IDLE_S, 3600.0)  # full-pool eviction off: only idle time frees slots
    out = tmp_path / "out.jsonl"
    service = ServiceProcess(config)
    port = service.wait_running()["sources"]["tcp"]["port"]
    _send(port, [_sample(f"bogus{k}", 1) for k in range(BOGUS)])
    wait_for(lambda: service.counters()["samples"] + service.counters()["rejected"]["stream_limit"] == BOGUS,
             60, what="the bogus ids handled")
    assert service.counters()["samples"] == 50  # the pool was full: the rest were rejected
    flooded_at = time.time()
    wait_for(lambda: (service.status() or {}).get("snapshot", {}).get("streams") == 50, 30,
             what="a snapshot holding the 50 bogus streams")
    service.kill()  # kill -9: the last snapshot still holds them

    # restarted later than the idle time: the downtime does not count (a power cut must not cost streams their
    # state), so the bogus streams come back and are evicted once idle_evict_s of running time has passed
    wait_for(lambda: time.time() > flooded_at + IDLE_S + 0.5, 30, what="the downtime to exceed the idle time")
    service = ServiceProcess(config)
    status = service.wait_running()
    assert service.log_events("snapshot_restored")[-1]["streams"] == 50
    wait_for(lambda: service.counters()["evicted"]["idle"] == 50, 30, what="the 50 bogus streams evicted")
    assert service.status()["streams"] == 0
    _send(port := status["sources"]["tcp"]["port"], [_sample("real", t) for t in (1, 2, 3)])
    wait_for(lambda: len(_predictions(out, "real")) == 3, 60, what="3 forecasts for the real stream")

    # a second flood, in the running service: evicted there once idle; the real stream keeps sending
    _send(port, [_sample(f"junk{k}", 1) for k in range(200)])
    wait_for(lambda: service.counters()["samples"] + service.counters()["rejected"]["stream_limit"] == 203,
             60, what="the second flood handled")
    t = 4
    deadline = time.monotonic() + 60
    while service.counters()["evicted"]["idle"] < 50 + 49:  # 49 junk ids took the free slots
        assert time.monotonic() < deadline, f"junk streams not evicted: {service.status()}"
        _send(port, [_sample("real", t)])  # the real stream stays active, so it is never evicted
        t += 1
        wait_for(lambda n=t - 1: len(_predictions(out, "real")) == n, 60, what=f"the forecast of t={t - 1}")
    assert service.status()["streams"] == 1
    assert service.stop() == 0
    steps_before = _predictions(out, "real")[-1]["step"]

    service = ServiceProcess(config)
    status = service.wait_running()
    assert status["streams"] == 1  # the real stream only
    assert service.log_events("snapshot_restored")[-1]["streams"] == 1
    _send(status["sources"]["tcp"]["port"], [_sample("real", t)])
    wait_for(lambda: len(_predictions(out, "real")) == t, 60, what="a forecast after the restart")
    assert _predictions(out, "real")[-1]["step"] == steps_before + 1  # its state survived the restart
    assert service.stop() == 0


def test_a_full_pool_makes_room_by_evicting_the_least_recently_used_idle_stream(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["lstm"]
    config = _config(tmp_path, bundle, 3600.0, 0.5)
    out = tmp_path / "out.jsonl"
    service = ServiceProcess(config)
    port = service.wait_running()["sources"]["tcp"]["port"]
    _send(port, [_sample(f"old{k}", 1) for k in range(50)])
    wait_for(lambda: service.counters()["samples"] == 50, 60, what="50 streams")
    _send(port, [_sample("old0", 2)])  # old0 is now the most recently used: old1 is the LRU one
    wait_for(lambda: service.counters()["samples"] == 51, 60, what="old0's second sample")
    t = 1
    while not _predictions(out, "new"):  # rejected (stream_limit) until old1 has been silent 0.5 s
        _send(port, [_sample("new", t)])
        t += 1
        wait_for(lambda n=50 + t: service.counters()["samples"] + service.counters()["rejected"]["stream_limit"] == n,
                 60, what=f"sample {t - 1} of the new stream handled")
    evicted = service.log_events("stream_evicted")
    assert [(e["stream"], e["reason"]) for e in evicted] == [("old1", "full")]
    assert service.counters()["evicted"] == {"idle": 0, "full": 1} and service.status()["streams"] == 50
    assert service.stop() == 0
