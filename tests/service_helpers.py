"""Helpers for the edge service tests: the service as a real subprocess, a real Mosquitto broker."""
from __future__ import annotations

import json
import signal
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
