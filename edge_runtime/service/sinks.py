"""Sinks: where forecasts and anomaly events go, one batch of records at a time.

A record is a dict: a forecast {"id", "t", "step", "prediction", "residual",
"score", "warm"} or an anomaly event {"id", "t", "event": "start"|"end",
"score"}. `write(records)` is called once per model batch and returns a
token; `settled(token)` says when those records are in the sink (a JSONL
line written, an MQTT publish acknowledged by the broker): only then does
the service acknowledge the samples behind them. `position()` is what the
write-ahead log records with each 'sunk' marker, and `written_keys(position)`
lists the records a sink already holds beyond it, so that records replayed
after a crash are not written twice (deduplicated by (type, id, t, event)).
"""
from __future__ import annotations

import json
import os
import sys
import threading

from edge_runtime.service.log import log

MAX_PENDING = 100_000  # lines held while the sink cannot write (a full disk); beyond, the oldest are dropped
CHUNK_BYTES = 1 << 20  # one os.write at most this large


class JsonlSink:
    """JSON lines appended to a file (or stdout for "-"), each line whole, rotated by size.

    Lines are written with os.write in chunks that each end on a line; a chunk that fails part-way (disk
    full) is truncated back, so the file never holds a torn line. What could not be written stays pending
    (at most MAX_PENDING lines; beyond, the oldest are dropped and counted) and is retried at the next
    write and at every status tick; `unwritten` counts what was still pending at close. With rotate_bytes,
    a file that would grow past it is renamed to <path>.1 (and .1 to .2, ... up to `keep`) first.
    """

    name = "jsonl"

    def __init__(self, config):
        self.path = config.path
        self.rotate_bytes, self.keep = config.rotate_bytes, config.keep
        self.to_file = config.path != "-"
        self.written = self.failures = self.rotations = self.dropped = self.unwritten = 0
        self.accepted = 0  # lines ever handed to write(): the settle token (written + dropped catch up with it)
        self.pending: list[bytes] = []  # encoded lines not yet written, oldest first
        self.last_error: str | None = None
        self.fd: int | None = None
        self.size = 0
        if self.to_file:
            self._open()
            if _ends_mid_line(self.path):  # a power cut tore the last line: keep it from merging with the next
                self._write_whole(b"\n")
        else:
            self.fd = sys.stdout.fileno()

    def stats(self) -> dict:
        return {"written": self.written, "failures": self.failures, "pending": len(self.pending),
                "dropped": self.dropped, "rotations": self.rotations}

    def write(self, records: list[dict]) -> int:
        """Queue the records' lines behind any pending ones and write what the file takes (never raises).

        Returns the settle token: these records are out of `pending` once written + dropped reach it.
        """
        self.pending.extend((json.dumps(r, separators=(",", ":")) + "\n").encode() for r in records)
        self.accepted += len(records)
        self._flush()
        return self.accepted

    def settled(self, token: int) -> bool:
        return self.written + self.dropped >= token

    def sync(self) -> bool:
        """fsync the file (what the WAL's fsync policy asks before a 'sunk' marker); False if it failed."""
        if not self.to_file or self.fd is None:
            return True
        try:
            os.fsync(self.fd)
            return True
        except OSError as e:
            self.failures += 1
            self.last_error = str(e)
            log("error", "sink_sync_failed", sink="jsonl", path=self.path, error=str(e))
            return False

    def position(self):
        """[inode, size] of the file now: where the lines of later batches begin. None for stdout."""
        if not self.to_file or self.fd is None:
            return None
        return [os.fstat(self.fd).st_ino, self.size]

    def written_keys(self, position) -> set:
        """Keys of the records in the file (and its rotated files) beyond `position`; for a replay's dedup."""
        if not self.to_file:
            return set()
        if not position:  # no marker yet (the log's first batches): the whole current file
            position = [os.fstat(self.fd).st_ino, 0] if self.fd is not None else [None, 0]
        inode, offset = position
        files = [self.path] + [f"{self.path}.{k}" for k in range(1, self.keep + 1)]
        chunks = []  # newest file first; stop at the file the position is in
        for name in files:
            try:
                with open(name, "rb") as f:
                    if os.fstat(f.fileno()).st_ino == inode:
                        f.seek(offset)
                        chunks.append(f.read())
                        break
                    chunks.append(f.read())
            except FileNotFoundError:
                continue
        else:
            chunks = chunks[:1]  # the position's file is gone (rotated out): the current file is what is left
        keys = set()
        for chunk in chunks:
            for line in chunk.split(b"\n"):
                try:
                    keys.add(record_key(json.loads(line)))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn or blank line
        return keys

    def _flush(self) -> None:
        if len(self.pending) > MAX_PENDING:
            overflow = len(self.pending) - MAX_PENDING
            del self.pending[:overflow]
            self.dropped += overflow
        if not self.pending:
            return
        try:
            self._write_pending()
        except OSError as e:  # disk full, closed stdout: count, keep the lines, try again later
            self.failures += 1
            self.last_error = str(e)
            log("error", "sink_write_failed", sink="jsonl", path=self.path, error=str(e), pending=len(self.pending))

    def _write_pending(self) -> None:
        while self.pending:
            if self.fd is None:
                self._open()  # a rotation closed the file and could not open the new one
            room = self.rotate_bytes - self.size if self.to_file and self.rotate_bytes else CHUNK_BYTES
            count, size = 0, 0
            for line in self.pending:
                if count and (size + len(line) > min(room, CHUNK_BYTES)):
                    break
                count, size = count + 1, size + len(line)
            if self.to_file and self.rotate_bytes and self.size and size > room:
                self._rotate()
                continue
            self._write_whole(b"".join(self.pending[:count]))
            del self.pending[:count]
            self.written += count

    def _write_whole(self, data: bytes) -> None:
        """All of data or nothing: a partial write to the file is truncated back (no torn line)."""
        done = 0
        try:
            while done < len(data):
                done += os.write(self.fd, data[done:])
        except OSError:
            if done and self.to_file:
                os.ftruncate(self.fd, self.size)
            raise
        self.size += len(data)

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = os.fstat(self.fd).st_size

    def _rotate(self) -> None:
        os.close(self.fd)
        self.fd = None
        for k in range(self.keep - 1, 0, -1):  # .1 -> .2, ...: the oldest (.keep) is replaced
            if os.path.exists(f"{self.path}.{k}"):
                os.replace(f"{self.path}.{k}", f"{self.path}.{k + 1}")
        os.replace(self.path, f"{self.path}.1")
        self.rotations += 1
        log("info", "sink_rotated", sink="jsonl", path=self.path, keep=self.keep)
        self._open()

    def close(self) -> None:
        """A last try for the pending lines; what is left is counted in `unwritten` (the service says so)."""
        if self.pending:
            self.write([])
        self.unwritten = len(self.pending)
        if self.unwritten:
            log("error", "sink_unwritten", sink="jsonl", path=self.path, records=self.unwritten,
                error=self.last_error)
        if self.to_file and self.fd is not None:
            os.close(self.fd)
            self.fd = None


def record_key(record: dict) -> tuple:
    """What makes a record unique: a stream's forecast at t, or its anomaly start/end at t."""
    return (record["type"], record["id"], record["t"], record.get("event"))


def _ends_mid_line(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(0, 2)
        if f.tell() == 0:
            return False
        f.seek(-1, 2)
        return f.read(1) != b"\n"


class MqttSink:
    """Publishes <prefix>/<id>/prediction and <prefix>/<id>/anomaly at the configured QoS.

    While the broker is away, paho holds up to max_queued messages and sends
    them on reconnect; beyond that a message is dropped and counted.
    """

    name = "mqtt"
    unwritten = 0

    def __init__(self, config):
        from paho.mqtt.client import CallbackAPIVersion, Client
        from paho.mqtt.enums import MQTTProtocolVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.config = config
        self.dropped = 0
        self._last = None  # the last publish, awaited on close so queued messages go out
        self.connected = threading.Event()
        client = Client(CallbackAPIVersion.VERSION2, client_id=config.client_id, protocol=MQTTProtocolVersion.MQTTv5)
        client.max_queued_messages_set(config.max_queued)
        client.max_inflight_messages_set(1000)
        client.reconnect_delay_set(1, 5)
        client.on_connect, client.on_disconnect = self._connected, self._disconnected
        client.on_connect_fail = lambda client, userdata: log(
            "warning", "mqtt_unreachable", sink="mqtt", host=config.host, port=config.port, retrying=True)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        client.connect_async(config.host, config.port, config.keepalive_s, clean_start=False, properties=properties)
        client.loop_start()
        self.client = client

    def _connected(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            self.connected.set()
            log("info", "mqtt_connected", sink="mqtt", host=self.config.host, port=self.config.port)

    def _disconnected(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        log("warning", "mqtt_disconnected", sink="mqtt", reason=str(reason_code), reconnecting=True)

    def stats(self) -> dict:
        return {"dropped": self.dropped}

    def write(self, records: list[dict]) -> list:
        """Publish; returns the settle token: the messages the broker has yet to acknowledge (QoS 1/2)."""
        from paho.mqtt.client import MQTT_ERR_NO_CONN, MQTT_ERR_SUCCESS

        prefix, qos = self.config.prefix, self.config.qos
        token = []
        for r in records:
            kind = r["type"]  # "prediction" or "anomaly": the topic's last level
            if kind == "prediction" and not self.config.predictions:
                continue
            info = self.client.publish(f"{prefix}/{r['id']}/{kind}", json.dumps(r, separators=(",", ":")), qos=qos)
            if info.rc not in (MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN):  # NO_CONN: queued for the reconnect
                self.dropped += 1
            else:
                self._last = info
                token.append(info)
        return token

    def settled(self, token: list) -> bool:
        """True once the broker acknowledged every message of the batch (PUBACK; for QoS 0: sent)."""
        while token and token[0].is_published():
            token.pop(0)
        return all(info.is_published() for info in token)

    def sync(self) -> bool:
        return True

    def position(self):
        return None

    def written_keys(self, position) -> set:
        return set()  # a broker keeps no readable history: subscribers deduplicate by (id, t) (QoS 1 is at least once)

    def close(self, timeout_s: float = 5.0) -> None:
        if self._last is not None and self.connected.is_set():
            try:
                self._last.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()


SINKS = {"jsonl": JsonlSink, "mqtt": MqttSink}


def open_sinks(configs: dict) -> list:
    return [SINKS[kind](config) for kind, config in configs.items()]
