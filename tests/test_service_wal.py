"""What is acknowledged is never lost: the write-ahead log, replay on start, TCP acknowledgements, and
deduplication of replayed records against what the JSONL sink already holds.

On main before the log, a kill -9 lost everything since the last snapshot: step counters went back and
the resent samples were forecast a second time (11,982 duplicate (id, step) records in one probe).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import IN_PROCESS_BACKEND, ROOT, run_isolated
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


@pytest.mark.parametrize("header", ['{"wal":2,"bundle_sha256":"another bundle","base":0}',
                                    '{"wal":2,"bundle_sha256":null,"base":5}'], ids=["another bundle", "after"])
def test_a_discarded_log_is_started_again_not_appended_to(fixture_bundles, tmp_path, header):
    """A log the start discards (another bundle's, or one that starts after the snapshot) is replaced: appended
    to, the next start discarded the acknowledged batches after it too (its header still said so)."""
    from edge_runtime.service.config import read_config
    from edge_runtime.service.lines import Sample
    from edge_runtime.service.service import Service

    config = write_config(tmp_path, fixture_bundles["lstm"][1], "[sources.stdin]\n", '[sinks.jsonl]\npath = "o"\n',
                          extra=f'backend = "{IN_PROCESS_BACKEND}"\n[wal]\nfsync = "off"\n')
    wal = tmp_path / "state" / "wal.jsonl"
    wal.parent.mkdir()
    wal.write_text(header + "\n" + "".join('{"seq":%d,"now":1.0,"events":[]}\n' % seq for seq in (6, 7, 8)))
    service = Service(read_config(config))
    service.process([Sample("w0", 1_700_000_000.0, (20.0, 3.0), "test", 0.0)])
    service.wal.close()
    restarted = Service(read_config(config))  # as after a kill -9: no snapshot
    restarted.wal.close()
    assert restarted.counters["wal"]["replayed_samples"] == 1 and list(restarted.streams) == ["w0"]
    assert json.loads(wal.read_text().splitlines()[0]) == {"wal": 2, "bundle_sha256": service.identity, "base": 0}
    assert (wal.parent / "wal.jsonl.discarded").read_text().startswith(header), "set aside, not deleted"


HEADER = b'{"wal":2,"bundle_sha256":null,"base":0}\n'


def _batch(seq: int) -> bytes:
    return b'{"seq":%d,"now":1.0,"events":[["c","w0,%d.0,20.0,3.0"]]}' % (seq, seq)


def _refused_start(config, wal, text: bytes) -> str:
    """Start the service on a log holding `text`: it must stop at once with exit code 2, one `error: ` line
    on stderr naming the log and no traceback, and leave the log as it was. Returns that line."""
    wal.parent.mkdir(exist_ok=True)
    wal.write_bytes(text)
    service = ServiceProcess(config)
    wait_for(lambda: service.proc.poll() is not None or (service.status() or {}).get("pid") == service.proc.pid,
             60, what="the start to end")
    if service.proc.poll() is None:
        service.stop()
        raise AssertionError(f"the service started on {text[:300]!r}")
    logs = service.logs()
    errors = [line for line in logs.splitlines() if line.startswith("error: ")]
    assert service.proc.returncode == 2 and len(errors) == 1, (text[:300], logs[-2000:])
    assert str(wal) in errors[0] and "--fresh" in errors[0], errors[0]
    assert "Traceback" not in logs and wal.read_bytes() == text
    return errors[0]


@pytest.mark.parametrize("name, what, advice", [
    ("wal.jsonl", "write-ahead log", "; start with --fresh to drop the state and the log"),
    ("snapshot.npz", "snapshot", ". Set fresh_start = true in the config or pass --fresh to start over")])
def test_a_fifo_in_place_of_the_log_or_the_snapshot_stops_the_start_in_one_line(fixture_bundles, tmp_path, name,
                                                                                  what, advice):
    """Reading either blocked the start forever (an ordinary open of a FIFO waits for a writer)."""
    _, bundle = fixture_bundles["lstm"]
    fifo = tmp_path / "state" / name
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    service = ServiceProcess(_config(tmp_path, bundle, free_port()))
    wait_for(lambda: service.proc.poll() is not None, 60, what="the start to stop")
    errors = [line for line in service.logs().splitlines() if line.startswith("error: ")]
    assert service.proc.returncode == 2 and errors == [f"error: {fifo}: {what} is a FIFO, not a regular file{advice}"]


def test_a_log_in_a_format_this_runtime_does_not_read_stops_the_start(fixture_bundles, tmp_path):
    """A log from a newer runtime (after a downgrade): replaying what this one understands would drop samples
    that were acknowledged, so it does not start; one line names the file and the way out, the log stays."""
    _, bundle = fixture_bundles["lstm"]
    config = _config(tmp_path, bundle, free_port())
    wal = tmp_path / "state" / "wal.jsonl"
    text = b'{"wal":3,"bundle_sha256":null,"base":0}\n{"seq":1,"now":1.0,"events":[["z","w0","w0,1.0,20,3"]]}\n'
    assert _refused_start(config, wal, text) == (f"error: {wal}: write-ahead log format 3, this runtime reads 1, 2; "
                                                 "start the runtime that wrote it, or --fresh")


def test_a_log_with_events_this_runtime_did_not_write_stops_the_start(fixture_bundles, tmp_path):
    """An edited or damaged log (a wrong id, a line that does not parse, a NaN, too few values, an unknown
    eviction reason, a batch without a clock): one line naming the file and the way out, no traceback; the
    log is left as it was for whoever looks into it."""
    _, bundle = fixture_bundles["lstm"]
    config = _config(tmp_path, bundle, free_port())
    wal = tmp_path / "state" / "wal.jsonl"
    for bad in ('["c","w0,1.0,abc,3"]', '["c",17]', '["s","w 0",1.0,[20.0,3.0]]', '["s","w0",1.0,[20.0]]',
                '["s","w0",NaN,[20.0,3.0]]', '["e","w0","tired"]', '["r"]', '"s"'):
        error = _refused_start(config, wal, HEADER + b'{"seq":1,"now":1.0,"events":[' + bad.encode() + b"]}\n")
        assert error.startswith(f"error: {wal}: a logged event this runtime did not write: "), (bad, error)
        assert error.endswith("start with --fresh to drop the state and the log")
    for now in (b'"soon"', b"1e400", b"1" + b"0" * 400):  # not a number; beyond a float's range (as an int too)
        error = _refused_start(config, wal, HEADER + b'{"seq":1,"now":' + now + b',"events":[]}\n')
        assert "batch 1 is not one this runtime wrote" in error


DEEP = b"[" * 100_000 + b"]" * 100_000  # deeper than the JSON parser recurses
DAMAGED_LINES = {  # a line the runtime does not write, between two whole batches (line 3 of 4)
    "a list": b'["seq", 1]', "a number": b"5", "a string": b'"wal"', "null": b"null", "an empty object": b"{}",
    "an empty line": b"", "not JSON": b'{"seq":2,"now":1.0,"ev', "not UTF-8": b'{"seq":2,"now":1.0,"events":["\xff"]}',
    "nested too deep": DEEP,
    "seq a string": b'{"seq":"2","now":1.0,"events":[]}', "seq a bool": b'{"seq":true,"now":1.0,"events":[]}',
    "seq a float": b'{"seq":2.0,"now":1.0,"events":[]}', "seq infinite": b'{"seq":1e400,"now":1.0,"events":[]}',
    "seq huge": b'{"seq":%d,"now":1.0,"events":[]}' % 2**64, "seq negative": b'{"seq":-2,"now":1.0,"events":[]}',
    "seq repeated": _batch(1), "two kinds": b'{"seq":2,"sunk":1,"now":1.0,"events":[]}',
    "an unknown key": b'{"seq":2,"now":1.0,"events":[],"why":1}', "a second header": HEADER.strip(),
    "sunk a string": b'{"sunk":"x","sinks":{}}', "sunk without sinks": b'{"sunk":1}',
    "sinks a list": b'{"sunk":1,"sinks":[]}', "a position of one number": b'{"sunk":1,"sinks":{"jsonl":[1]}}',
    "a position a string": b'{"sunk":1,"sinks":{"jsonl":"x"}}',
    "a position a float": b'{"sunk":1,"sinks":{"jsonl":[1,0.5]}}',
}
DAMAGED_HEADERS = {  # the first line
    "base a string": b'{"wal":2,"bundle_sha256":null,"base":"x"}',
    "base infinite": b'{"wal":2,"bundle_sha256":null,"base":1e400}',
    "base null": b'{"wal":2,"bundle_sha256":null,"base":null}', "no base": b'{"wal":2,"bundle_sha256":null}',
    "base negative": b'{"wal":2,"bundle_sha256":null,"base":-1}',
    "base a bool": b'{"wal":2,"bundle_sha256":null,"base":false}',
    "format a string": b'{"wal":"2","bundle_sha256":null,"base":0}',
    "bundle a number": b'{"wal":2,"bundle_sha256":5,"base":0}', "no header": _batch(1),
}
DAMAGED = {**{name: (3, HEADER + _batch(1) + b"\n" + line + b"\n" + _batch(3) + b"\n")
              for name, line in DAMAGED_LINES.items()},
           **{name: (1, line + b"\n" + _batch(1) + b"\n" + _batch(2) + b"\n") for name, line in DAMAGED_HEADERS.items()}}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_line_in_the_log_stops_the_start(fixture_bundles, tmp_path, case):
    """A log edited or damaged in the middle, not just a torn last line: one line naming the file and the line,
    no traceback, the log left as it was. Only the text after the last newline can be a cut write (whole lines
    are written at once), so a bad line followed by good ones is not dropped as torn: the batches after it
    were acknowledged."""
    number, text = DAMAGED[case]
    _, bundle = fixture_bundles["lstm"]
    wal = tmp_path / "state" / "wal.jsonl"
    error = _refused_start(_config(tmp_path, bundle, free_port()), wal, text)
    assert error.startswith(f"error: {wal}: damaged or edited at line {number} ("), error
    assert error.endswith("; start with --fresh to drop the state and the log") and len(error) < len(str(wal)) + 250


KEYS = ("wal", "seq", "sunk", "now", "events", "base", "sinks", "bundle_sha256")
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**70), 10**100])
    | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), children, max_size=5),
    max_leaves=12)


@pytest.fixture(scope="module")
def real_log(fixture_bundles, tmp_path_factory):
    """(config, the lines of a log the service wrote: a header, batches of samples, resets and evictions, and
    'sunk' markers) from the service in this process, stepped directly (test_service_rounds does so too)."""
    from edge_runtime.service.config import read_config
    from edge_runtime.service.lines import Reset, Sample
    from edge_runtime.service.service import Service
    from edge_runtime.service.sinks import open_sinks

    folder = tmp_path_factory.mktemp("real-log")
    config = write_config(folder, fixture_bundles["lstm"][1], "[sources.stdin]\n",
                          f'[sinks.jsonl]\npath = "{folder / "out.jsonl"}"\n',
                          extra=f'backend = "{IN_PROCESS_BACKEND}"\n[wal]\nfsync = "off"\n')
    service = Service(read_config(config))
    service.sinks = open_sinks(service.config.sinks)
    t0 = 1_700_000_000.0
    for k in range(6):
        if k == 3:
            service.evict_idle(time.time() + 10**7)  # as if idle long enough: logged with the next batch
        service.process([Sample(f"w{s}", t0 + k, (20.0 + 0.1 * k, 3.0), "test", 0.0) for s in range(2)]
                        + ([Reset("w0", "test")] if k == 4 else []))
    for sink in service.sinks:
        sink.close()
    service.wal.close()
    lines = service.wal.path.read_bytes().splitlines()
    kinds = {next(iter(json.loads(line))) for line in lines}
    events = {event[0] for line in lines for event in json.loads(line).get("events", [])}
    assert kinds == {"wal", "seq", "sunk"} and events == {"s", "r", "e"}, lines
    return config, lines, service.model


def _changed(record: dict):
    """`record` with one field, (a batch) one event or one field of an event set to any JSON value: deeper than
    the reader's checks, into the replay's."""
    fields = st.builds(lambda key, value: {**record, key: value}, st.sampled_from(sorted({*record, *KEYS})),
                       JSON_VALUES)
    events = record.get("events")
    if not events:
        return fields

    def with_event(k: int, event) -> dict:
        return {**record, "events": [*events[:k], event, *events[k + 1:]]}

    def with_event_field(k: int, j: int, value) -> dict:
        event = events[k]
        return with_event(k, [*event[:j % len(event)], value, *event[j % len(event) + 1:]])

    return (fields | st.builds(with_event, st.integers(0, len(events) - 1), JSON_VALUES)
            | st.builds(with_event_field, st.integers(0, len(events) - 1), st.integers(0, 3),
                        JSON_VALUES | st.floats() | st.floats(-1e12, 4e9)))


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_json_in_place_of_a_logged_line_starts_or_stops_with_one_line(real_log, data):
    """Any JSON value, or the record with one field or event changed to any JSON value, in place of one line
    of a real log: the start either goes through (a record the runtime could have written) or stops with the
    service's one-line error; never another exception, and a refused log is left as it was. In this process,
    the probe's child left out (3 ms a start)."""
    from edge_runtime.service.config import read_config
    from edge_runtime.service.service import Service, ServiceError

    config, lines, model = real_log
    number = data.draw(st.integers(2, len(lines) - 1), label="line")  # never the header nor the last line
    value = data.draw(JSON_VALUES | _changed(json.loads(lines[number - 1])), label="in its place")
    text = b"".join(json.dumps(value).encode() + b"\n" if k == number else line + b"\n"
                    for k, line in enumerate(lines, 1))
    wal = config.parent / "state" / "wal.jsonl"
    wal.write_bytes(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("edge_runtime.probe.load_probed", lambda *args, **kwargs: model)
        try:
            service = Service(read_config(config))
        except ServiceError as e:
            message = str(e)
            assert len(message.splitlines()) == 1 and str(wal) in message and "--fresh" in message, message
            assert wal.read_bytes() == text
            event(f"refused: {message[len(str(wal)) + 2:].split(' (')[0].split(':')[0][:40]}")
        else:
            service.wal.close()
            event("started")


def test_deploy_reads_a_snapshot_it_opened_itself(tmp_path):
    """deploy's park script opens the snapshot relative to the state folder and hands read_snapshot the open file;
    session 21's FIFO check first took only paths (found by the slow deploy tests, a TypeError on the Pi)."""
    from deploy.park_snapshot import snapshot_identity
    from edge_runtime.service.snapshot import SNAPSHOT_NAME, write_snapshot

    write_snapshot(tmp_path / SNAPSHOT_NAME, {"bundle_sha256": "ab" * 32}, {})
    state = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert snapshot_identity(state) == "ab" * 32
    finally:
        os.close(state)
