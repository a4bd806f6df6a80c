"""What is acknowledged is never lost: the write-ahead log, replay on start, TCP acknowledgements, and
deduplication of replayed records against what the JSONL sink already holds.

On main before the log, a kill -9 lost everything since the last snapshot: step counters went back and
the resent samples were forecast a second time (11,982 duplicate (id, step) records in one probe).
"""
from __future__ import annotations

import json
import socket
import threading
import time

from conftest import ROOT, run_isolated
from service_helpers import ServiceProcess, free_port, read_jsonl, wait_for, write_config
from traffic import sensor_value

STREAMS = 3


def _line(stream: int, k: int) -> bytes:
    return f"w{stream},{k}.0,{sensor_value(stream, k)[0]},{sensor_value(stream, k)[1]}\n".encode()


def _reference(bundle, steps: int) -> dict:
    """Uninterrupted: one Session per stream over every sample, under the service's backend."""
    done = run_isolated(f"""
        import json, edge_runtime
        from traffic import sensor_value
        model = edge_runtime.load({str(bundle)!r}, backend="tflite_runtime")
        out = {{}}
        for s in range({STREAMS}):
            session = model.session()
            out[f"w{{s}}"] = [session.step(sensor_value(s, k)).tolist() for k in range({steps})]
        print(json.dumps(out))
    """, PYTHONPATH=f"{ROOT}:{ROOT / 'tests'}")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


class AckingSender:
    """A TCP sender that keeps every line until the service answers "ack <n>", and resends the
    unacknowledged ones, in order, on a new connection after the service came back."""

    def __init__(self, lines: list[bytes]):
        self.lines = lines
        self.done = [False] * len(lines)  # acknowledged
        self.sent_on_connection: list[int] = []  # line index of the connection's n-th line (n = position + 1)
        self.acks = 0

    def run_connection(self, port: int, pace_every: int = 0) -> None:
        """Send every unacknowledged line, then wait for their acks; returns when all are acknowledged or the
        connection breaks (the service was killed)."""
        self.sent_on_connection = []
        self.sending = True
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                reader = threading.Thread(target=self._read_acks, args=(s,), daemon=True)
                reader.start()
                for index, line in enumerate(self.lines):
                    if self.done[index]:
                        continue
                    self.sent_on_connection.append(index)
                    s.sendall(line)
                    if pace_every and len(self.sent_on_connection) % pace_every == 0:
                        time.sleep(0.005)  # pacing only, so that a kill lands mid-stream
                self.sending = False
                reader.join(60)
        except OSError:
            pass  # the service was killed under us: what is not acknowledged is sent again

    def _read_acks(self, s: socket.socket) -> None:
        buffer = b""
        while self.sending or not all(self.done[i] for i in self.sent_on_connection):
            try:
                data = s.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            *whole, buffer = buffer.split(b"\n")
            for line in whole:
                word, n = line.split()
                assert word == b"ack", line
                self.done[self.sent_on_connection[int(n) - 1]] = True
                self.acks += 1


def _config(tmp_path, bundle, port: int, out: str = "out.jsonl", snapshot_s: float = 3600.0):
    return write_config(tmp_path, bundle, f"[sources.tcp]\nport = {port}\nack = true\n",
                        f'[sinks.jsonl]\npath = "{out}"\n',
                        f"[snapshot]\ninterval_s = {snapshot_s}\n[status]\ninterval_s = 0.1\n")


def test_kill_9_between_snapshots_loses_nothing_and_steps_continue(fixture_bundles, tmp_path):
    """TCP with acknowledgements; 4 kill -9s, no snapshot in between (interval 1 h): every acknowledged
    line is forecast exactly once, steps run 1..N without a gap or a repeat, forecasts equal an
    uninterrupted run's bit for bit (the WAL replay goes through the same step path)."""
    _, bundle = fixture_bundles["lstm"]
    steps = 600
    lines = [_line(s, k) for k in range(steps) for s in range(STREAMS)]
    sender = AckingSender(lines)
    port = free_port()
    config = _config(tmp_path, bundle, port)
    kills = 0
    while not all(sender.done):
        service = ServiceProcess(config)
        service.wait_running()
        if kills < 4:
            acked_before = sender.acks
            feeding = threading.Thread(target=sender.run_connection, args=(port, 20), daemon=True)
            feeding.start()
            wait_for(lambda n=acked_before + 150: sender.acks >= n or all(sender.done), 60, what="some acks")
            service.kill()
            feeding.join(60)
            kills += 1
            assert not service.log_events("snapshot_restored")  # no snapshot: the WAL alone carried the state
        else:
            sender.run_connection(port)
            assert service.stop() == 0
    assert kills == 4
    records, torn = read_jsonl(tmp_path / "out.jsonl")
    keys = [(r["id"], r["t"]) for r in records]
    assert torn == 0
    assert len(keys) == len(set(keys)) == STREAMS * steps  # every line once: nothing lost, nothing twice
    reference = _reference(bundle, steps)
    for r in records:
        k = int(r["t"])
        assert r["step"] == k + 1, r  # the step counter never went back
        assert r["prediction"] == reference[r["id"]][k], r
    replays = [e for path in sorted(tmp_path.glob("service-*.log")) for e in _events(path, "wal_replayed")]
    assert len(replays) >= 4 and sum(e["samples"] for e in replays) > 0


def _events(path, event: str) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                out.append(record)
    return out


def test_records_already_in_the_sink_are_not_written_again(fixture_bundles, tmp_path):
    """A kill between the sink's write and the WAL's 'sunk' marker: the replay forecasts those samples again,
    and the sink keeps only the ones it does not hold. Simulated exactly by cutting the markers off the log."""
    _, bundle = fixture_bundles["gru"]
    port = free_port()
    config = _config(tmp_path, bundle, port)
    lines = [_line(s, k) for k in range(100) for s in range(STREAMS)]
    sender = AckingSender(lines)
    service = ServiceProcess(config)
    service.wait_running()
    sender.run_connection(port)
    assert all(sender.done)
    service.kill()
    wal = tmp_path / "state" / "wal.jsonl"
    kept = [line for line in wal.read_text().splitlines() if '"sunk"' not in line]
    wal.write_text("\n".join(kept) + "\n")  # as if killed right after the sink's write, before any marker
    service = ServiceProcess(config)
    status = service.wait_running()
    assert status["counters"]["wal"]["replayed_samples"] == 300
    everything, _ = read_jsonl(tmp_path / "out.jsonl", kind=None)  # forecasts and anomaly events
    wal_counters = status["counters"]["wal"]
    assert wal_counters["reemitted"] == wal_counters["deduplicated"] == len(everything) >= 300
    assert service.stop() == 0
    assert read_jsonl(tmp_path / "out.jsonl", kind=None)[0] == everything  # not one line added
    records, _ = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 300 and len({(r["id"], r["t"]) for r in records}) == 300


def test_a_torn_log_tail_is_cut_and_the_rest_replayed(fixture_bundles, tmp_path):
    """A kill -9 in the middle of an append leaves half a line: never acknowledged, so dropped; the whole
    batches before it are replayed, and the stream goes on from there."""
    _, bundle = fixture_bundles["lstm"]
    port = free_port()
    config = _config(tmp_path, bundle, port)
    sender = AckingSender([_line(0, k) for k in range(50)])
    service = ServiceProcess(config)
    service.wait_running()
    sender.run_connection(port)
    service.kill()
    wal = tmp_path / "state" / "wal.jsonl"
    with open(wal, "ab") as f:
        f.write(b'{"seq":999,"now":1.0,"events":[["s","w0",50.0,[20')
    service = ServiceProcess(config)
    status = service.wait_running()
    assert status["counters"]["wal"]["replayed_samples"] == 50
    assert service.log_events("wal_replayed")[0]["torn_tail"] is True
    assert not wal.read_bytes().endswith(b"[20")
    AckingSender([_line(0, 50)]).run_connection(port)
    assert service.stop() == 0
    records, torn = read_jsonl(tmp_path / "out.jsonl")
    assert torn == 0 and [int(r["t"]) for r in records] == list(range(51))
    assert [r["step"] for r in records] == list(range(1, 52))


def test_a_snapshot_cuts_the_log(fixture_bundles, tmp_path):
    """Once a snapshot is durable, the log restarts as its header: it holds what came after, not everything."""
    _, bundle = fixture_bundles["lstm"]
    port = free_port()
    config = _config(tmp_path, bundle, port, snapshot_s=0.2)
    service = ServiceProcess(config)
    service.wait_running()
    sender = AckingSender([_line(0, k) for k in range(200)])
    sender.run_connection(port)
    wal = tmp_path / "state" / "wal.jsonl"
    wait_for(lambda: wal.read_text().count('"seq"') == 0, 30, what="a snapshot cutting the log")
    header = json.loads(wal.read_text().splitlines()[0])
    assert header["wal"] == 2 and header["base"] >= 1
    service.kill()
    service = ServiceProcess(config)
    service.wait_running()
    assert service.stop() == 0
    records, _ = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 200 and len({r["t"] for r in records}) == 200


def _logged(wal) -> list[dict]:
    return [json.loads(line) for line in wal.read_text().splitlines()]


def test_a_log_written_before_lines_were_kept_still_replays_bit_for_bit(fixture_bundles, tmp_path):
    """Format 2 keeps a CSV sample as its line (["c", line]); a format-1 log, its samples as numbers
    (["s", id, t, values]), is what an upgrade finds on disk: it must replay to the same forecasts."""
    _, bundle = fixture_bundles["lstm"]
    port = free_port()
    config = _config(tmp_path, bundle, port)
    steps = 40
    service = ServiceProcess(config)
    service.wait_running()
    AckingSender([_line(s, k) for k in range(steps) for s in range(STREAMS)]).run_connection(port)
    service.kill()
    wal = tmp_path / "state" / "wal.jsonl"
    logged = _logged(wal)
    events = [event for entry in logged if "events" in entry for event in entry["events"]]
    assert logged[0]["wal"] == 2 and len(events) == STREAMS * steps
    assert {event[0] for event in events} == {"c"} and events[0][1] == _line(0, 0).decode().strip()
    old = []  # the same log as the previous runtime wrote it; no 'sunk' marker, so every record is owed again
    for entry in logged:
        if "wal" in entry:
            old.append({**entry, "wal": 1})
        elif "events" in entry:
            numbers = [line.split(",") for _, line in entry["events"]]
            old.append({**entry, "events": [["s", i, float(t), [float(v) for v in vs]] for i, t, *vs in numbers]})
    wal.write_text("".join(json.dumps(entry) + "\n" for entry in old))
    (tmp_path / "out.jsonl").unlink()
    service = ServiceProcess(config)
    assert service.wait_running()["counters"]["wal"]["replayed_samples"] == STREAMS * steps
    assert service.stop() == 0
    records, torn = read_jsonl(tmp_path / "out.jsonl")
    reference = _reference(bundle, steps)
    assert torn == 0 and len(records) == STREAMS * steps
    assert all(r["prediction"] == reference[r["id"]][int(r["t"])] and r["step"] == int(r["t"]) + 1 for r in records)


def test_a_log_in_a_format_this_runtime_does_not_read_stops_the_start(fixture_bundles, tmp_path):
    """A log from a newer runtime (after a downgrade): replaying what this one understands would drop samples
    that were acknowledged, so it does not start; one line names the file and the way out, the log stays."""
    _, bundle = fixture_bundles["lstm"]
    config = _config(tmp_path, bundle, free_port())
    wal = tmp_path / "state" / "wal.jsonl"
    wal.parent.mkdir()
    text = '{"wal":3,"bundle_sha256":null,"base":0}\n{"seq":1,"now":1.0,"events":[["z","w0","w0,1.0,20,3"]]}\n'
    wal.write_text(text)
    service = ServiceProcess(config)
    assert service.proc.wait(60) == 2
    errors = [line for line in service.logs().splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {wal}: write-ahead log format 3, this runtime reads 1, 2; start the runtime that "
                      "wrote it, or --fresh"], service.logs()[-2000:]
    assert "Traceback" not in service.logs() and wal.read_text() == text


def test_a_log_with_events_this_runtime_did_not_write_stops_the_start(fixture_bundles, tmp_path):
    """An edited or damaged log (a wrong id, a line that does not parse, a NaN, too few values, an unknown
    eviction reason, a batch without a clock): one line naming the file and the way out, no traceback; the
    log is left as it was for whoever looks into it."""
    _, bundle = fixture_bundles["lstm"]
    config = _config(tmp_path, bundle, free_port())
    wal = tmp_path / "state" / "wal.jsonl"
    wal.parent.mkdir()
    header = '{"wal":2,"bundle_sha256":null,"base":0}\n'
    for bad in ('["c","w0,1.0,abc,3"]', '["c",17]', '["s","w 0",1.0,[20.0,3.0]]', '["s","w0",1.0,[20.0]]',
                '["s","w0",NaN,[20.0,3.0]]', '["e","w0","tired"]', '["r"]', '"s"'):
        text = header + '{"seq":1,"now":1.0,"events":[' + bad + "]}\n"
        wal.write_text(text)
        service = ServiceProcess(config)
        assert service.proc.wait(60) == 2, bad
        errors = [line for line in service.logs().splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {wal}: a logged event this runtime did not "
                                                          "write: "), (bad, service.logs()[-1500:])
        assert errors[0].endswith("start with --fresh to drop the state and the log")
        assert "Traceback" not in service.logs() and wal.read_text() == text
    wal.write_text(header + '{"seq":1,"now":"soon","events":[]}\n')
    service = ServiceProcess(config)
    assert service.proc.wait(60) == 2
    assert "batch 1 is not one this runtime wrote" in service.logs() and "Traceback" not in service.logs()
