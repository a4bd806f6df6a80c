"""A real Mosquitto broker for the service's tests and load benchmark: a free 127.0.0.1 port,
a temporary config, persistence on disk, started and stopped by the caller."""
from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """mosquitto -c <folder>/mosquitto.conf; stop() is SIGTERM, so it saves its persistence file.

    durable (the default): the in-memory database is saved after every change (`autosave_on_changes
    true` with `autosave_interval 1`), so a kill -9 keeps what was saved at the end of the broker's
    previous loop turn. Mosquitto 2.0 writes a PUBACK before that turn's save, so the messages
    acknowledged in the very turn of the kill can still be lost (docs/DESIGN-NOTES.md measures it).
    durable=False saves every 30 s (a throughput benchmark: the whole database is rewritten at each save).
    """

    def __init__(self, folder: Path, port: int | None = None, durable: bool = True):
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto is not installed: `make setup` installs it (tools/apt-deps.sh)")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = self.folder / "mosquitto.conf"
        # max_queued_messages 0 = unlimited: the default (1000) silently drops QoS 1 messages queued for
        # a client that is offline or slow. max_inflight_messages: unacknowledged messages per client
        # (the default 20 caps a subscriber that acknowledges after processing at ~20 per round trip).
        save = "autosave_on_changes true\nautosave_interval 1\n" if durable else "autosave_interval 30\n"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {self.folder}/\n{save}"
            "max_queued_messages 0\nmax_inflight_messages 1000\n"
            f"log_dest file {self.folder}/mosquitto.log\nuser {getpass.getuser()}\n")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> "Mosquitto":
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log()[-1000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not accept connections on port {self.port} within {timeout}s")

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.proc = None

    def kill(self) -> None:
        """kill -9: no final save; a restart loads the persistence file as the last save left it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(15)
        self.proc = None

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def mqtt_client(client_id: str, port: int, host: str = "127.0.0.1", max_inflight: int = 1000):
    """A connected paho client (MQTT v5, QoS 1 friendly limits) with its network loop running.

    max_inflight 0: every publish goes out at once (paho rescans its whole queue at each PUBACK when capped)."""
    from paho.mqtt.client import CallbackAPIVersion, Client
    from paho.mqtt.enums import MQTTProtocolVersion

    from edge_runtime.service.sources import without_matcher_cycles

    client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    without_matcher_cycles(client)  # a load's subscriber receives 5,000 messages a second
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(1, 2)
    client.connect(host, port, 30)
    client.loop_start()
    return client
