"""kill -9 at random moments: every restart resumes from a whole snapshot and computes what an
uninterrupted run computes. The write-ahead log is off here, so each run starts exactly at its snapshot;
with it (the default) nothing since the snapshot is lost either: tests/test_service_wal.py."""
from __future__ import annotations

import json
import random
import socket
import threading
import time

import pytest

from conftest import ROOT, run_isolated
from edge_runtime.service.snapshot import SnapshotError, read_snapshot
from service_helpers import ServiceProcess, free_port, read_jsonl, wait_for, write_config
from traffic import sensor_value

STREAMS, STEPS, KILLS = 4, 4000, 22


def _line(stream: int, k: int) -> bytes:
    return f"c{stream},{k}.0,{sensor_value(stream, k)[0]},{sensor_value(stream, k)[1]}\n".encode()


def _reference(bundle) -> dict:
    """Uninterrupted: one Session per stream over every sample, tflite_runtime as the service uses."""
    done = run_isolated(f"""
        import json, edge_runtime
        from traffic import sensor_value
        model = edge_runtime.load({str(bundle)!r}, backend="tflite_runtime")
        out = {{}}
        for s in range({STREAMS}):
            session = model.session()
            out[f"c{{s}}"] = [session.step(sensor_value(s, k)).tolist() for k in range({STEPS})]
        print(json.dumps(out))
    """, PYTHONPATH=f"{ROOT}:{ROOT / 'tests'}")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


class SnapshotWatcher(threading.Thread):
    """Reads the snapshot file over and over while the service is killed and restarted."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.reads, self.failures, self.stop = path, 0, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                read_snapshot(self.path)
                self.reads += 1
            except FileNotFoundError:
                pass  # before the first snapshot only (checked below: reads keep growing)
            except SnapshotError as e:
                self.failures.append(str(e))
            time.sleep(0.005)  # pacing: a reader that checks the snapshot ~200 times a second while it is rewritten


def _feed(port: int, start_k: int, stop: threading.Event) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            for k in range(start_k, STEPS):
                if stop.is_set():
                    return
                s.sendall(b"".join(_line(stream, k) for stream in range(STREAMS)))
                if k % 5 == 0:
                    time.sleep(0.01)  # pacing (~2,000 lines/s) so that a run is killed mid-stream
    except OSError:
        pass  # the service was killed under us


@pytest.mark.slow
def test_kill_9_at_random_moments_resumes_from_a_valid_snapshot(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["lstm"]
    reference = _reference(bundle)
    port = free_port()
    snapshot_path = tmp_path / "state" / "snapshot.npz"
    watcher = SnapshotWatcher(snapshot_path)
    watcher.start()
    rng = random.Random(5)
    runs = []  # per run: output file, steps in the snapshot it started from
    for run in range(KILLS + 1):
        before = {}
        if snapshot_path.exists():
            meta, _ = read_snapshot(snapshot_path)  # raises if unreadable
            before = {s["id"]: s["steps"] for s in meta["streams"]}
        out = tmp_path / f"out-{run}.jsonl"
        config = write_config(tmp_path, bundle, f"[sources.tcp]\nport = {port}\n", f'[sinks.jsonl]\npath = "{out.name}"\n',
                              "[snapshot]\ninterval_s = 0.05\n[status]\ninterval_s = 0.1\n"
                              "[wal]\nenabled = false\n")  # the snapshot alone: the WAL's kill test is test_service_wal
        service = ServiceProcess(config)
        started = time.monotonic()
        last = run == KILLS
        # Some kills land during start-up, most mid-stream. A mid-stream kill is timed from the moment the
        # service reports "running", not from its start: a slow start-up (a busy machine) must not turn
        # every kill into a start-up kill that never leaves a snapshot to resume from.
        kill_at = started + rng.uniform(0.0, 0.3) if rng.random() < 0.15 else None
        stop_feeding = threading.Event()
        feeder = None
        while last or kill_at is None or time.monotonic() < kill_at:
            status = service.status()
            if feeder is None and status and status["pid"] == service.proc.pid and status["state"] == "running":
                start_k = max(0, min(before.values(), default=0) - 20)  # resend a little before the snapshot
                feeder = threading.Thread(target=_feed, args=(port, start_k, stop_feeding), daemon=True)
                feeder.start()
                if kill_at is None:
                    kill_at = time.monotonic() + rng.uniform(0.3, 2.2)
            if last and feeder is not None and not feeder.is_alive():
                break
            assert service.proc.poll() is None, service.logs()[-3000:]
            time.sleep(0.01)  # the poll interval of this loop, which ends on the events above
        if last:
            done = lambda: len({(r["id"], r["t"]) for r in read_jsonl(out)[0]}) + sum(before.values())  # noqa: E731
            wait_for(lambda: done() >= STREAMS * STEPS, 120, interval=0.1, what="the last run to forecast every sample")
            assert service.stop() == 0
        else:
            service.kill()
        stop_feeding.set()
        restored = service.log_events("snapshot_restored")
        runs.append({"out": out, "before": before, "restored": restored[0]["steps"] if restored else None})
    watcher.stop.set()
    watcher.join()

    assert watcher.failures == [] and watcher.reads > 100
    assert sum(1 for r in runs[1:] if r["before"]) >= 20  # restarts that had a snapshot to resume from
    covered, torn_total, compared = set(), 0, 0
    for r in runs:
        records, torn = read_jsonl(r["out"])
        torn_total += torn
        if r["before"] and r["restored"] is not None:
            assert r["restored"] == r["before"]  # what it says it restored is what was on disk
        first = {}
        for rec in records:
            k = int(rec["t"])
            assert rec["step"] == k + 1, rec  # steps continue from the snapshot: no reset, no replay
            assert rec["prediction"] == reference[rec["id"]][k], (rec, reference[rec["id"]][k])
            first.setdefault(rec["id"], rec["step"])
            covered.add((rec["id"], k))
            compared += 1
        for stream_id, step in first.items():  # each run starts right after its snapshot's step
            assert step == r["before"].get(stream_id, 0) + 1, (r["out"].name, stream_id, step, r["before"])
    assert covered == {(f"c{s}", k) for s in range(STREAMS) for k in range(STEPS)}
    assert torn_total <= KILLS
    print(f"\n{KILLS} kills, {watcher.reads} snapshot reads, {compared} forecasts compared, {torn_total} torn lines")
