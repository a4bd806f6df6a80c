"""Helpers for the edge service tests: the service as a real subprocess, a real Mosquitto broker."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import ROOT, python_env
from pipeline.broker import Mosquitto, free_port, mqtt_client  # noqa: F401 (re-exported for the tests)

ENV = python_env()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class OrderedPublisher:
    """A QoS 1 publisher on a connected paho client that remembers which messages the broker acknowledged
    (and when), and keeps them in order across a broker restart, as a sensor gateway must.

    paho-mqtt 2.2 sends a publish() made while it reconnects (socket open, CONNACK not yet read) at once,
    ahead of the older messages it resends after the CONNACK. The service then sees t=102.72 before
    t=101.84 and rejects the older samples as out_of_order (a CI run lost 440 acknowledged samples so).
    So from a disconnect on, messages are held here until paho is connected again and everything sent
    before is acknowledged; then they go out in order.

    No lock of ours around publish(): paho calls on_publish with its own message lock held, so holding
    ours across publish() would deadlock the two threads. Acknowledged mids are kept raw and mapped to
    keys afterwards (fewer than 65,535 messages per test, so mids do not wrap).
    """

    def __init__(self, client):
        self.client = client
        self.by_mid: dict[int, object] = {}
        self.acked_mids: list[tuple[int, float]] = []  # (mid, monotonic time of its PUBACK)
        self.refused = 0  # PUBACKs with a failure reason code: the broker did not take the message
        self.connects: list[float] = []  # monotonic times of the CONNACKs from here on
        self.held: list[tuple[str, bytes, object]] = []  # published since a disconnect, not yet given to paho
        self.disconnects = self.resumed_after = 0  # counted by paho's thread; the last one caught up with
        client.on_publish = self._puback
        client.on_connect = lambda *args: self.connects.append(time.monotonic())
        client.on_disconnect = lambda *args: setattr(self, "disconnects", self.disconnects + 1)

    @classmethod
    def connect(cls, port: int, client_id: str) -> "OrderedPublisher":
        return cls(mqtt_client(client_id, port))

    def _puback(self, client, userdata, mid, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused += 1
        else:
            self.acked_mids.append((mid, time.monotonic()))

    def publish(self, topic: str, payload: bytes, key=None) -> None:
        self.held.append((topic, payload, key))
        self._send_held()

    def _send_held(self) -> bool:
        """Send what is held if paho is connected and caught up since the last disconnect; True once none is."""
        disconnects = self.disconnects
        if disconnects != self.resumed_after:
            if not (self.client.is_connected() and len(self.acked_mids) + self.refused >= len(self.by_mid)):
                return False
            self.resumed_after = disconnects
        held, self.held = self.held, []
        for topic, payload, key in held:
            self.by_mid[self.client.publish(topic, payload, qos=1).mid] = key
        return True

    def flush(self, timeout: float = 60.0) -> None:
        wait_for(self._send_held, timeout, what="the messages held over a broker restart sent")

    @property
    def acked(self) -> list:
        """The keys the broker acknowledged, in the order it did."""
        return [self.by_mid.get(mid) for mid, _ in list(self.acked_mids)]

    @property
    def acked_at(self) -> dict:
        """key -> when the broker acknowledged it (the first time)."""
        out: dict = {}
        for mid, when in list(self.acked_mids):
            out.setdefault(self.by_mid.get(mid), when)
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class SlowHandshakeProxy:
    """A TCP relay in front of a real broker that can cut its clients off and then hold the broker's first
    bytes to each new connection (the CONNACK) for `delay_s`, like a broker far away on a slow link.

    The window it opens is the one in which paho-mqtt sends new publishes at once, ahead of what it resends
    after the CONNACK. Connections are relayed by two threads each; all are daemons."""

    def __init__(self, broker_port: int, delay_s: float):
        self.broker_port, self.delay_s = broker_port, delay_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.slow = False  # from cut_off() on, every new connection's CONNACK waits delay_s
        self.connections: list[tuple] = []  # (client socket, broker socket)
        self.held: list[tuple[float, float]] = []  # (monotonic) when a CONNACK was held, when it went on
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            broker = socket.create_connection(("127.0.0.1", self.broker_port))
            self.connections.append((client, broker))
            threading.Thread(target=self._relay, args=(client, broker, False), daemon=True).start()
            threading.Thread(target=self._relay, args=(broker, client, self.slow), daemon=True).start()

    def _relay(self, source, target, hold_first: bool) -> None:
        try:
            while data := source.recv(65536):
                if hold_first:
                    held = time.monotonic()
                    time.sleep(self.delay_s)  # the slow link itself, not a wait for an event
                    self.held.append((held, time.monotonic()))
                    hold_first = False
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            sock.close()

    def cut_off(self) -> None:
        """Close every relayed connection; the clients' reconnections get a slow CONNACK."""
        self.slow = True
        for client, broker in self.connections:
            for sock in (client, broker):
                try:
                    sock.shutdown(2)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        self.cut_off()


def subscribe_and_wait(client, topic: str, qos: int = 1, timeout: float = 30.0) -> None:
    """Subscribe and return once the broker's SUBACK arrived: from then on it routes the topic to us."""
    acknowledged = threading.Event()
    client.on_subscribe = lambda client, userdata, mid, reason_codes, properties: acknowledged.set()
    result, _ = client.subscribe(topic, qos=qos)
    assert result == 0, f"SUBSCRIBE to {topic} could not be sent (paho code {result})"
    assert acknowledged.wait(timeout), f"no SUBACK for {topic} within {timeout}s"


def write_config(folder: Path, bundle: Path, sources: str, sinks: str, extra: str = "") -> Path:
    """A service config in `folder`, state in folder/state; sources/sinks are TOML tables as text."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "edge.toml"
    path.write_text(f'bundle = "{bundle}"\nstate_dir = "state"\n{extra}\n{sources}\n{sinks}\n')
    return path


STARTED: list["ServiceProcess"] = []  # every service a test started; conftest kills the ones left running


def kill_leftovers() -> int:
    """SIGKILL the services a test left running (it failed before its stop); how many there were. A
    leftover would hold its port and keep writing into the next test's load."""
    left = [service for service in STARTED if service.proc.poll() is None]
    for service in left:
        service.kill()
    STARTED.clear()
    return len(left)


class ServiceProcess:
    """`python -m edge_runtime serve --config ...` with its stderr (JSON logs) in a file."""

    def __init__(self, config: Path, *args: str, stdin=subprocess.DEVNULL, preexec_fn=None):
        self.config = config
        self.state_dir = config.parent / "state"
        self.log_path = config.parent / f"service-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "serve", "--config", str(config), *args],
                                     stdin=stdin, stdout=subprocess.PIPE if stdin == subprocess.PIPE else
                                     subprocess.DEVNULL, stderr=self._log, env=ENV, cwd=ROOT, preexec_fn=preexec_fn)
        STARTED.append(self)

    def status(self) -> dict | None:
        try:
            return json.loads((self.state_dir / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def wait_running(self, timeout: float = 60.0) -> dict:
        def running():
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited with {self.proc.returncode}: {self.logs()[-2000:]}")
            s = self.status()
            return s if s and s["pid"] == self.proc.pid and s["state"] == "running" else None
        return wait_for(running, timeout, what="service running")

    def counters(self) -> dict:
        return (self.status() or {}).get("counters", {})

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_events(self, event: str) -> list[dict]:
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == event:
                    out.append(record)
        return out

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no handler, no final snapshot
        self.proc.wait(10)
        self._log.close()


def read_jsonl(path: Path, kind: str | None = "prediction") -> tuple[list[dict], int]:
    """(records of this type, or of every type for None; torn lines): a line cut by kill -9 is
    counted, not parsed. The sink interleaves anomaly events with the predictions."""
    records, torn = [], 0
    if not path.exists():
        return records, torn
    for line in path.read_text().splitlines():
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            torn += 1
            continue
        if kind is None or record["type"] == kind:
            records.append(record)
    return records, torn
