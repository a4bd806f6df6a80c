"""Sinks: where forecasts and anomaly events go, one batch of records at a time.

A record is a dict: a forecast {"id", "t", "step", "prediction", "residual",
"score", "warm"} or an anomaly event {"id", "t", "event": "start"|"end",
"score"}. `write(records, lines)` is called once per model batch (lines:
the records' JSON texts, encoded once by the service for every sink; None:
the sink encodes them) and returns a token; `settled(token)` says when
those records are in the sink (a JSONL line written, an MQTT publish
acknowledged by the broker): only then does
the service acknowledge the samples behind them. A sink never drops a
record: what it cannot deliver yet it holds, and `backlog()` (records handed
to it and not yet settled) against `high_water` is what makes the service
stop taking input (backpressure) until the sink catches up. `position()` is
what the write-ahead log records with each 'sunk' marker, and
`written_keys(position)` lists the records a sink already holds beyond it,
so that records replayed after a crash are not written twice (deduplicated
by (type, id, t, event)).
"""
from __future__ import annotations

import errno
import json
import os
import stat
import sys
import threading
import time
from bisect import bisect_right
from collections import OrderedDict, deque
from itertools import accumulate, islice

from edge_runtime.service.compact import compact_json as _dumps
from edge_runtime.service.fsyncs import FsyncClock
from edge_runtime.service.log import log

MAX_PENDING = 100_000  # lines held while the sink cannot write (a full disk): the service stops taking input at it
CHUNK_BYTES = 1 << 20  # one os.write at most this large
CHUNK_LINES = 8192  # and at most this many lines (the sizes of a long backlog are summed a chunk at a time)
MQTT_WINDOW = 65535  # publishes handed to paho, not yet acknowledged, at most (lowered to the broker's Receive Maximum)


class JsonlSink:
    """JSON lines appended to a file (or stdout for "-"), each line whole, rotated by size.

    Lines are written with os.write in chunks that each end on a line; a chunk that fails part-way (disk
    full) is truncated back, so the file never holds a torn line. What could not be written stays pending
    and is retried at the next write and at every status tick; nothing is dropped: with MAX_PENDING lines
    pending the service stops taking input (backpressure). `unwritten` counts what was still pending at close. With rotate_bytes,
    a file that would grow past it is renamed to <path>.1 (and .1 to .2, ... up to `keep`) first.

    A path that exists and is not a regular file (/dev/null, a serial port, a FIFO another process reads) is a
    stream, as stdout is: written to, never fsynced (fsync fails there with EINVAL, and no batch was ever
    acknowledged, while the unacknowledged batches piled up in memory), never rotated (that would rename the
    device node) and never read back. A FIFO is opened without waiting: with no reader yet the start fails with
    one line; a slow reader slows the service as a slow disk would; a reader that goes away is an error
    counted like a full disk, and the FIFO is opened again at the next try.
    """

    name = "jsonl"
    high_water = MAX_PENDING
    dropped = 0  # kept for the counters' shape: this sink no longer drops

    def __init__(self, config):
        self.path = config.path
        self.rotate_bytes, self.keep = config.rotate_bytes, config.keep
        self.to_file = config.path != "-" and not _is_stream(config.path)  # a regular file (or one to create)
        self.written = self.failures = self.rotations = self.unwritten = 0
        self.accepted = 0  # lines ever handed to write(): the settle token (written catches up with it)
        self.fsync_on_rotate = False  # set by the service when its fsync policy makes forecasts durable
        self.fsync_clock = FsyncClock()
        self.pending: list[bytes] = []  # encoded lines not yet written, oldest first
        self.last_error: str | None = None
        self.fd: int | None = None
        self.size = 0
        if config.path == "-":
            self.fd = sys.stdout.fileno()
        else:
            self._open()
            if self.to_file and _ends_mid_line(self.path):  # a power cut tore the last line: keep it apart
                self._write_whole(b"\n")

    def stats(self) -> dict:
        return {"written": self.written, "failures": self.failures, "pending": len(self.pending),
                "backlog": len(self.pending), "dropped": 0, "rotations": self.rotations,
                "error": self.last_error if self.pending else None, "fsync": self.fsync_clock.stats()}

    def backlog(self) -> int:
        return len(self.pending)

    def pump(self) -> None:
        pass

    def write(self, records: list[dict], lines: list[bytes] | None = None) -> int:
        """Queue the records' lines behind any pending ones and write what the file takes (never raises).
        lines: the records' JSON texts, when the caller has them (compact.record_lines).

        Returns the settle token: these records are out of `pending` once `written` reaches it.
        """
        if lines is None:
            lines = [_dumps(r).encode() for r in records]
        self.pending.extend([line + b"\n" for line in lines])
        self.accepted += len(records)
        self._flush()
        return self.accepted

    def settled(self, token: int) -> bool:
        return self.written >= token

    def sync(self) -> bool:
        """fsync the file (what the WAL's fsync policy asks before a 'sunk' marker); False if it failed."""
        if not self.to_file or self.fd is None:
            return True
        try:
            self.fsync_clock.fsync(self.fd)
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
        if not self.pending:
            return
        try:
            self._write_pending()
        except OSError as e:  # disk full, closed stdout: count, keep the lines, try again later
            if e.errno == errno.EPIPE and self.path != "-" and self.fd is not None:  # a FIFO's reader left
                os.close(self.fd)
                self.fd = None
            self.failures += 1
            self.last_error = str(e)
            log("error", "sink_write_failed", sink="jsonl", path=self.path, error=str(e), pending=len(self.pending))

    def _write_pending(self) -> None:
        while self.pending:
            if self.fd is None:
                self._open()  # a rotation closed the file and could not open the new one
            room = self.rotate_bytes - self.size if self.to_file and self.rotate_bytes else CHUNK_BYTES
            # the lines that fit, at least one: the running sizes of the first CHUNK_LINES, summed and searched
            # in C (a Python loop over the lines was a tenth of the service's time at its ceiling)
            ends = list(accumulate(map(len, islice(self.pending, CHUNK_LINES))))  # (n,) bytes up to each line
            count = max(1, bisect_right(ends, min(room, CHUNK_BYTES)))
            size = ends[count - 1]
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
        if not self.to_file:
            self.fd = _open_stream(self.path)
            return
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = os.fstat(self.fd).st_size

    def _rotate(self) -> None:
        if self.fsync_on_rotate:  # sync() fsyncs the open file only: the lines of this one are made durable now
            self.fsync_clock.fsync(self.fd)
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
        if self.path != "-" and self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _is_stream(path: str) -> bool:
    """The path exists and is not a regular file: a device, a FIFO (a directory fails at open, saying so)."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def _open_stream(path: str) -> int:
    try:  # without O_NONBLOCK, opening a FIFO nobody reads would wait for a reader, forever
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise OSError(errno.ENXIO, f"{path} is a FIFO that nobody reads: start its reader first") from None
        raise
    os.set_blocking(fd, True)  # whole lines: a write waits for the reader rather than stopping part-way
    return fd


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
    """Publishes <prefix>/<id>/prediction and <prefix>/<id>/anomaly at the configured QoS; never drops.

    Records wait in the sink (`waiting`) and are handed to paho `window` at a time (the Receive Maximum
    the broker announces in its CONNACK: 1,000 for Mosquitto's max_inflight_messages 1000): paho has every
    message it holds in flight (its own inflight limit is off, whose queue rescans every held message at
    each PUBACK). While the broker is away new records wait here; what paho held goes out again after the
    reconnection, and the new ones only once that is acknowledged, so subscribers get each stream in order.
    `max_queued` is the high-water mark: with that many records not yet acknowledged by the broker
    (waiting + in flight), the service stops taking input until PUBACKs come back (backpressure).
    Only the main thread publishes (`pump`); paho's thread only counts PUBACKs and wakes the main thread.
    A PUBACK with a failure reason code (the broker refused the message, e.g. an ACL) is not a delivery:
    `refused` is counted and the sink stops settling, so nothing behind it is acknowledged.
    """

    name = "mqtt"
    unwritten = 0
    fsync_on_rotate = False  # a broker has no files
    fsync_clock = None  # nor fsyncs
    dropped = 0  # kept for the counters' shape: this sink no longer drops

    def __init__(self, config, wake: threading.Event | None = None):
        from paho.mqtt.client import CallbackAPIVersion, Client
        from paho.mqtt.enums import MQTTProtocolVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.config = config
        self.high_water = config.max_queued
        self.wake = wake or threading.Event()  # set at each PUBACK: the service's loop waits on it while paused
        self.accepted = 0  # records ever handed to write(): numbered 1.., a batch's token is its last number
        self.waiting: deque = deque()  # (n, topic, payload) not yet handed to paho, oldest first
        self.inflight: OrderedDict = OrderedDict()  # n -> mid, handed to paho, oldest first
        self._puback_mids: deque = deque()  # appended by paho's thread, taken by the main thread
        self._acked_mids: set = set()  # PUBACKed mids not yet at the front of `inflight`
        self.done = 0  # every record numbered up to here is acknowledged by the broker
        self.acked = self.refused = 0  # PUBACKs (counted by paho's thread)
        self.failures = 0  # publish() calls paho refused (kept waiting, tried again)
        self.window = min(MQTT_WINDOW, 1000)  # until the CONNACK says what the broker takes
        self.last_error: str | None = None
        self.connected = threading.Event()
        # paho sends a publish made while it reconnects (socket open, CONNACK not yet read) at once, ahead of
        # the older ones it resends after the CONNACK: subscribers would see forecasts out of order. So after
        # a disconnect (the first connection counts as one) nothing new goes to paho until it is connected
        # and has everything it held acknowledged. Counted by paho's thread; caught up with by the main one.
        self.disconnects, self.resumed_after = 1, 0
        client = Client(CallbackAPIVersion.VERSION2, client_id=config.client_id, protocol=MQTTProtocolVersion.MQTTv5)
        client.max_queued_messages_set(0)  # the window below bounds what paho holds
        client.max_inflight_messages_set(0)  # everything paho holds is in flight: no O(held) rescans per PUBACK
        client.reconnect_delay_set(1, 5)
        client.on_connect, client.on_disconnect = self._connected, self._disconnected
        client.on_publish = self._published
        client.on_connect_fail = self._unreachable
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        client.connect_async(config.host, config.port, config.keepalive_s, clean_start=False, properties=properties)
        client.loop_start()
        self.client = client

    def _unreachable(self, client, userdata) -> None:
        self.last_error = f"broker {self.config.host}:{self.config.port} unreachable"
        log("warning", "mqtt_unreachable", sink="mqtt", host=self.config.host, port=self.config.port, retrying=True)

    def _connected(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            self.window = min(MQTT_WINDOW, getattr(properties, "ReceiveMaximum", MQTT_WINDOW) or MQTT_WINDOW)
            self.connected.set()
            self.last_error = None
            log("info", "mqtt_connected", sink="mqtt", host=self.config.host, port=self.config.port)
            self.wake.set()

    def _disconnected(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.disconnects += 1
        self.last_error = f"disconnected: {reason_code}"
        log("warning", "mqtt_disconnected", sink="mqtt", reason=str(reason_code), reconnecting=True)

    def _published(self, client, userdata, mid, reason_code, properties) -> None:
        """paho's thread, its message lock held: count and wake, nothing else (no publish, no lock of ours)."""
        if reason_code.is_failure:  # not delivered: `done` stops before it, so its batch never settles
            self.refused += 1
            self.last_error = f"the broker refused a publish: {reason_code}"
        else:
            self.acked += 1
            self._puback_mids.append(mid)
        self.wake.set()

    def stats(self) -> dict:
        return {"dropped": 0, "backlog": self.backlog(), "waiting": len(self.waiting), "inflight": len(self.inflight),
                "acknowledged": self.acked, "refused": self.refused, "failures": self.failures,
                "connected": self.connected.is_set(), "error": self.last_error}

    def backlog(self) -> int:
        """Records handed to this sink and not yet acknowledged by the broker."""
        return self.accepted - self.done

    def write(self, records: list[dict], lines: list[bytes] | None = None) -> int:
        """Queue the records for publishing and publish what the window allows; returns the settle token.
        lines: the records' JSON texts, when the caller has them (compact.record_lines)."""
        prefix = self.config.prefix
        for k, r in enumerate(records):
            kind = r["type"]  # "prediction" or "anomaly": the topic's last level
            if kind == "prediction" and not self.config.predictions:
                continue
            self.accepted += 1
            self.waiting.append((self.accepted, f"{prefix}/{r['id']}/{kind}", _dumps(r) if lines is None else lines[k]))
        self.pump()
        return self.accepted

    def pump(self) -> None:
        """Hand waiting records to paho while fewer than MQTT_WINDOW are in flight; advance `done`."""
        from paho.mqtt.client import MQTT_ERR_NO_CONN, MQTT_ERR_SUCCESS

        inflight, waiting, acked = self.inflight, self.waiting, self._acked_mids
        while self._puback_mids:
            acked.add(self._puback_mids.popleft())
        while inflight:  # PUBACKs come in order; one out of order only holds `done` back until its turn
            n, mid = next(iter(inflight.items()))
            if mid not in acked:
                break
            acked.discard(mid)
            del inflight[n]
            self.done = n
        if not inflight:
            self.done = waiting[0][0] - 1 if waiting else self.accepted
        if self.refused:
            return  # a refused message was not delivered: settle nothing more (status shows the error)
        qos = self.config.qos
        if qos and not self._resumed(inflight):
            return
        while waiting and len(inflight) < self.window:
            n, topic, payload = waiting[0]
            if qos == 0 and not self.connected.is_set():
                return  # paho forgets a QoS 0 publish made while disconnected: keep it here
            info = self.client.publish(topic, payload, qos=qos)
            if info.rc not in (MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN):  # NO_CONN: paho keeps a QoS 1/2 one for later
                self.failures += 1
                self.last_error = f"publish refused by the client: rc {info.rc}"
                return  # kept waiting: tried again at the next pump
            waiting.popleft()
            inflight[n] = info.mid  # at most 65,535 in flight: a mid is not reused before its PUBACK

    def _resumed(self, inflight) -> bool:
        """False from a disconnect until paho is connected again with nothing of ours left unacknowledged."""
        disconnects = self.disconnects
        if disconnects == self.resumed_after:
            return True
        if not self.connected.is_set() or inflight:
            return False
        self.resumed_after = disconnects
        return True

    def settled(self, token: int) -> bool:
        """True once the broker acknowledged every record up to this batch's (PUBACK; for QoS 0: sent)."""
        return self.done >= token

    def sync(self) -> bool:
        return True

    def position(self):
        return None

    def written_keys(self, position) -> set:
        return set()  # a broker keeps no readable history: subscribers deduplicate by (id, t) (QoS 1 is at least once)

    def close(self, timeout_s: float = 5.0) -> None:
        """Publish what waits and give the broker timeout_s to acknowledge it (the service's stop)."""
        if self.connected.is_set():
            deadline = time.monotonic() + timeout_s
            while (self.waiting or self.inflight) and time.monotonic() < deadline:
                self.wake.clear()
                self.pump()
                self.wake.wait(0.05)
        self.client.disconnect()
        self.client.loop_stop()


SINKS = {"jsonl": JsonlSink, "mqtt": MqttSink}


def open_sinks(configs: dict, wake: threading.Event | None = None) -> list:
    """The configured sinks; MQTT sinks set `wake` at each broker acknowledgement."""
    return [MqttSink(config, wake) if kind == "mqtt" else SINKS[kind](config) for kind, config in configs.items()]
