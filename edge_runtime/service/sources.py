"""Sources: threads that read lines or messages and hand them to the service's queue.

Each source runs in its own daemon thread and calls `emit(items)` with the
samples, resets and rejections of one read, or for a line source with the
read's raw lines (`intake.Lines`, parsed when the main thread takes them; rejections are counted by the main thread, so
counters have one writer). `emit` blocks when the queue is full: a fast
sender is slowed down (TCP backpressure, MQTT's broker queue) instead of
growing memory. An outage a source expects (a serial port unplugged, a
broker away, a followed file not there yet) is logged and retried inside
the source. An exception out of `run()` is restarted by the supervisor in
`Source` and, if it keeps failing, marks the source `failed`: the service
then stops with exit 1 rather than run on with a dead source.
"""
from __future__ import annotations

import os
import resource
import selectors
import socket
import sys
import threading
import time
from collections import deque
from typing import Callable

from edge_runtime.service.config import is_loopback
from edge_runtime.service.intake import Lines
from edge_runtime.service.lines import STREAM_ID, LineSplitter, Rejection, parse, parse_many
from edge_runtime.service.log import log

RETRY_S = 1.0
RESTART_WINDOW_S = 60.0  # max_restarts counts the failures within this window
READ_BYTES = 65536
MQTT_BATCH_LINES = 1000  # an MQTT payload may hold this many lines of max_line_bytes; a longer one is oversized
LISTEN_BACKLOG = socket.SOMAXCONN  # pending connections cost no descriptor; a short backlog drops SYNs (1 s retries)
ACCEPTS_PER_WAKE = 64
FD_RESERVE = 64  # file descriptors kept beyond max_connections: snapshot, status, sinks, logs, the model


def raise_fd_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard one (systemd's LimitNOFILE); returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # keep the soft limit; check_fd_budget says whether it is enough
    return soft, hard


def check_fd_budget(configs: dict, soft_limit: int) -> None:
    """max_connections must leave FD_RESERVE descriptors free, or a flood would starve snapshot writes."""
    tcp = configs.get("tcp")
    if tcp is not None and tcp.max_connections + FD_RESERVE > soft_limit:
        raise OSError(f"[sources.tcp].max_connections = {tcp.max_connections} needs {tcp.max_connections + FD_RESERVE}"
                      f" file descriptors, the limit is {soft_limit}: lower it or raise LimitNOFILE")


class Source:
    """Base: a named thread; `finished` is set when a finite input (stdin, a file without follow) ends.

    A `run()` that raises is restarted after RETRY_S, counted in `restarts`; more than `max_restarts`
    failures within RESTART_WINDOW_S set `failed` (the error), which the service treats as fatal: it
    stops and exits non-zero so that systemd restarts it. A source never dies silently.
    """

    name = "source"

    def __init__(self, emit: Callable, channels: int, max_line_bytes: int, stop: threading.Event, bounds=None,
                 max_restarts: int = 5):
        self.emit, self.channels, self.max_line_bytes, self.stop = emit, channels, max_line_bytes, stop
        self.bounds = bounds  # ((low, high), ...) per channel: values outside are rejected (out_of_range)
        self.max_restarts = max_restarts
        self._failures_logged_at = -1.0  # monotonic second of the last line_failed log (one a second)
        self.finished = threading.Event()
        self.restarts = 0
        self.failed: str | None = None  # set (the error) once the source gave up
        self.thread = threading.Thread(target=self._run_supervised, name=self.name, daemon=True)
        # shown in status.json (e.g. the bound TCP port); written by this source's thread, copied by the status
        # writer: set every key here or in the subclass's __init__, so that it never changes size while copied
        self.info: dict = {"state": "running", "restarts": 0}

    def start(self) -> "Source":
        self.thread.start()
        return self

    def _run_supervised(self) -> None:
        failures: list[float] = []  # monotonic times of the recent failures
        while True:
            try:
                self.run()
                break  # a finite input ended, or the service is stopping
            except Exception as e:  # a source bug must show, and must not silently stop feeding
                if self.stop.is_set():
                    break
                now = time.monotonic()
                failures = [f for f in failures if now - f < RESTART_WINDOW_S] + [now]
                if len(failures) > self.max_restarts:
                    self.failed = f"{self.name} failed {len(failures)} times in {RESTART_WINDOW_S:g}s: {e!r}"[:500]
                    self.info["state"] = "failed"
                    log("error", "source_gave_up", source=self.name, error=repr(e)[:300], failures=len(failures))
                    return  # not `finished`: the service must not mistake this for the end of the input
                self.restarts += 1
                self.info.update(state="restarting", restarts=self.restarts)
                log("error", "source_failed", source=self.name, error=repr(e)[:300], restart_in_s=RETRY_S,
                    restarts=self.restarts)
                self.stop.wait(RETRY_S)
                self.info["state"] = "running"
        if self.finite:
            self.finished.set()

    finite = False

    def run(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _lines(self, splitter: LineSplitter, data: bytes, source: str) -> None:
        """The lines of one read, handed over raw as one chunk and parsed when taken (see intake.py)."""
        lines = splitter.feed(data)
        if lines:
            received = time.perf_counter()
            self.emit(Lines(lines, lambda run: self._items(run, source, received)))

    def _line(self, line: bytes | None, source: str, received: float, ack=None) -> None:
        item = self._item(line, source, received, ack)
        if item is not None:
            self.emit([item])

    def _items(self, lines: list[bytes | None], source: str, received: float) -> list:
        """The items of one read's lines, in order (a blank line gives none): parsed as a whole read unless a
        line was oversized, and line by line should the whole-read parser ever raise."""
        if None not in lines:
            try:
                return parse_many(lines, self.channels, source, received, bounds=self.bounds)
            except Exception:
                pass  # parse() below turns the line that trips it into a counted rejection
        return [item for line in lines if (item := self._item(line, source, received)) is not None]

    def _item(self, line: bytes | None, source: str, received: float, ack=None, stream: str | None = None):
        if line is None:
            return Rejection("oversized", f"line longer than {self.max_line_bytes} bytes", source, ack)
        return self._parse(line, source, received, stream=stream, ack=ack)

    def _parse(self, data: bytes, source: str, received: float, stream: str | None = None, ack=None):
        """parse(), and should it ever raise anyway, a counted rejection: one line never stops a reader."""
        try:
            return parse(data, self.channels, source, received, stream=stream, ack=ack, bounds=self.bounds)
        except Exception as e:
            now = time.monotonic()
            if now - self._failures_logged_at >= 1.0:  # rate-limited: a flood of such lines is one log a second
                self._failures_logged_at = now
                log("error", "line_failed", source=source, error=repr(e)[:200])
            return Rejection("malformed", f"line failed ({type(e).__name__})", source, ack)


class StdinSource(Source):
    name, finite = "stdin", True

    def run(self) -> None:
        self._read_fd(sys.stdin.fileno(), "stdin")

    def _read_fd(self, fd: int, source: str) -> None:
        splitter = LineSplitter(self.max_line_bytes)
        while not self.stop.is_set():
            data = os.read(fd, READ_BYTES)
            if not data:
                break
            self._lines(splitter, data, source)
        for line in splitter.flush():
            self._line(line, source, time.perf_counter())


class FileSource(Source):
    """A file of lines; with follow, waits for more like `tail -f` and reopens a rotated or truncated file."""

    name = "file"

    def __init__(self, config, *args):
        super().__init__(*args)
        self.path, self.follow = config.path, config.follow
        self.finite = not self.follow
        self.info["bytes_read"] = 0

    def run(self) -> None:
        splitter = LineSplitter(self.max_line_bytes)
        source = f"file:{self.path}"
        handle = self._open(source)
        while not self.stop.is_set():
            data = handle.read(READ_BYTES) if handle else b""
            if data:
                self._lines(splitter, data, source)
                self.info["bytes_read"] = handle.tell()  # in status.json: how far the file has been taken in
                continue
            if not self.follow:
                break
            time.sleep(0.1)
            handle = self._reopen_if_replaced(handle, source)
        for line in splitter.flush():
            self._line(line, source, time.perf_counter())

    def _open(self, source: str):
        while not self.stop.is_set():
            try:
                return open(self.path, "rb")
            except OSError as e:
                if not self.follow:
                    raise  # restarted by the supervisor, then fatal: a missing input must not look like an empty one
                log("warning", "file_missing", source=source, error=str(e), retry_s=RETRY_S)
                self.stop.wait(RETRY_S)
        return None

    def _reopen_if_replaced(self, handle, source: str):
        try:
            stat = os.stat(self.path)
        except OSError:
            return handle  # rotated away and not yet recreated: keep reading the old one
        if handle is None or stat.st_ino != os.fstat(handle.fileno()).st_ino:
            log("info", "file_reopened", source=source)
            if handle:
                handle.close()
            return self._open(source)
        if stat.st_size < handle.tell():
            log("info", "file_truncated", source=source)
            handle.seek(0)
        return handle


class Connection:
    """One TCP client of the selector loop: its partial line, when it last sent something, and in ack mode
    how many lines it sent and the acknowledgements not yet written back."""

    __slots__ = ("splitter", "source", "last_active", "lines", "out")

    def __init__(self, max_line_bytes: int, source: str):
        self.splitter = LineSplitter(max_line_bytes)
        self.source = source
        self.last_active = time.monotonic()
        self.lines = 0  # non-blank lines parsed (by the main thread, as it takes them): the n of "ack <n>"
        self.out = bytearray()  # "ack <n>\n" lines the socket has not taken yet


MAX_ACK_BACKLOG = 1 << 20  # bytes of acknowledgements a client leaves unread before it is closed


class TcpSource(Source):
    """A line server: one thread, one selector for the listening socket and every connection.

    At most `max_connections` clients: one more is accepted and closed at once (counted in `refused`), so
    a flood of idle connections can neither exhaust file descriptors (snapshot and status writes need
    some) nor threads. A client silent for `idle_timeout_s` is closed (counted in `idle_closed`). Binary
    garbage or a flood only costs that connection its lines; a full queue slows every client (backpressure).

    With `ack = true` the n-th non-blank line of a connection (blank: nothing but whitespace once decoded as
    UTF-8) is answered "ack <n>\\n" once the service is done with it: its sample is in the durable
    write-ahead log and its forecast in the sinks, or it was rejected (counted; sending it again would not
    help). The main thread queues acknowledgements and wakes
    this thread through a socket pair; a client that leaves MAX_ACK_BACKLOG bytes of them unread is closed.
    """

    name = "tcp"

    def __init__(self, config, *args):
        super().__init__(*args)
        try:
            self.server = socket.create_server((config.host, config.port), backlog=LISTEN_BACKLOG)
        except (OSError, OverflowError) as e:
            error = getattr(e, "strerror", None) or e
            raise OSError(f"[sources.tcp] cannot listen on {config.host}:{config.port}: {error}") from None
        self.server.setblocking(False)
        self.max_connections, self.idle_timeout_s = config.max_connections, config.idle_timeout_s
        self.connections: dict[socket.socket, Connection] = {}
        self.ack_mode = config.ack
        self._acks: deque = deque()  # (socket, first n, last n) from the main thread, written out by this thread
        # True from the main thread's wake until this thread starts draining _acks: one wake byte per
        # batch of acknowledgements, not one per line (a syscall each, and a selector wake each: 18% of
        # the service's CPU at its ceiling, pipeline/ceiling.py)
        self._wake_sent = False
        self._wake_r, self._wake_w = socket.socketpair() if self.ack_mode else (None, None)
        if self._wake_w is not None:
            self._wake_w.setblocking(False)  # the main thread must never wait on this thread
        self.refused = self.idle_closed = 0  # written by this thread only, read by the status writer
        self.info.update(host=config.host, port=self.server.getsockname()[1], connections=0)
        if not is_loopback(config.host):  # allowed by allow_remote = true: say so at every start
            log("warning", "tcp_open_to_network", host=config.host, port=self.info["port"],
                risk="the line protocol has no authentication: anyone who can reach this port can feed samples")

    def run(self) -> None:
        log("info", "tcp_listening", host=self.info["host"], port=self.info["port"],
            max_connections=self.max_connections)
        selector = selectors.DefaultSelector()
        selector.register(self.server, selectors.EVENT_READ)
        if self.ack_mode:
            self._wake_r.setblocking(False)
            selector.register(self._wake_r, selectors.EVENT_READ)
        next_idle_check = time.monotonic() + 1.0
        try:
            while not self.stop.is_set():
                for key, events in selector.select(timeout=0.5):
                    if key.fileobj is self.server:
                        self._accept(selector)
                    elif key.fileobj is self._wake_r:
                        self._take_acks(selector)
                    elif key.fileobj in self.connections:  # (not dropped earlier in this round)
                        if events & selectors.EVENT_WRITE:
                            self._send_acks(selector, key.fileobj)
                        if events & selectors.EVENT_READ and key.fileobj in self.connections:
                            self._read(selector, key.fileobj)
                if time.monotonic() >= next_idle_check:
                    self._close_idle(selector)
                    next_idle_check = time.monotonic() + 1.0
        finally:
            for conn in list(self.connections):
                self._drop(selector, conn, "stopping")
            selector.close()

    def _accept(self, selector) -> None:
        for _ in range(ACCEPTS_PER_WAKE):  # bounded: reading the open connections must not starve
            try:
                conn, peer = self.server.accept()
            except BlockingIOError:
                return
            except OSError as e:  # EMFILE and the like: the listening socket stays readable, so wait a little
                log("error", "tcp_accept_failed", error=str(e))
                self.stop.wait(0.1)
                return
            source = f"tcp:{peer[0]}:{peer[1]}"
            if len(self.connections) >= self.max_connections:
                conn.close()
                self.refused += 1
                log("warning", "tcp_refused", reason="max_connections", source=source,
                    max_connections=self.max_connections)
                continue
            conn.setblocking(False)
            self.connections[conn] = Connection(self.max_line_bytes, source)
            selector.register(conn, selectors.EVENT_READ)
            self.info["connections"] = len(self.connections)
            log("info", "tcp_connected", source=source, connections=len(self.connections))

    def _read(self, selector, conn: socket.socket) -> None:
        state = self.connections[conn]
        try:
            data = conn.recv(READ_BYTES)
        except BlockingIOError:
            return
        except OSError as e:
            log("warning", "tcp_error", source=state.source, error=str(e))
            data = b""
        if not data:
            self._drop(selector, conn, "closed by peer")
            return
        state.last_active = time.monotonic()
        if not self.ack_mode:
            self._lines(state.splitter, data, state.source)
            return
        lines = state.splitter.feed(data)
        if lines:
            received = time.perf_counter()
            self.emit(Lines(lines, lambda run: self._acknowledged_items(conn, state, run, received)))

    def _acknowledged_items(self, conn: socket.socket, state: Connection, lines: list, received: float) -> list:
        """A run of one read's lines parsed (in the main thread, when taken), numbered on from the connection's
        earlier items (a blank line gives none, so only the parse can count), and one acknowledgement for them
        carried by the last: the main thread handles a connection's items in order and acknowledges only what is
        done, so when the last one's turn comes every line before it is done too."""
        items = self._items(lines, state.source, received)
        if items:
            first = state.lines + 1
            state.lines += len(items)
            items[-1].ack = lambda first=first, last=state.lines: self._queue_ack(conn, first, last)
        return items

    def _queue_ack(self, conn: socket.socket, first: int, last: int) -> None:
        """Called by the main thread once lines first..last of this connection are done; this thread writes
        their "ack <n>" lines."""
        self._acks.append((conn, first, last))
        if self._wake_sent:  # appended before this thread clears the flag, so its drain will see it
            return
        self._wake_sent = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # the wake pair is full (this thread is due to wake anyway) or closed (stopping)

    def _take_acks(self, selector) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        self._wake_sent = False  # before draining: an ack appended after this point sends a wake of its own
        touched = set()
        while self._acks:
            conn, first, last = self._acks.popleft()
            state = self.connections.get(conn)
            if state is not None:  # gone: the client sends the line again and hears "ack" as a duplicate's
                state.out += b"".join([b"ack %d\n" % n for n in range(first, last + 1)])
                touched.add(conn)
        for conn in touched:
            self._send_acks(selector, conn)

    def _send_acks(self, selector, conn: socket.socket) -> None:
        state = self.connections[conn]
        try:
            sent = conn.send(state.out) if state.out else 0
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self._drop(selector, conn, f"acknowledgement failed: {e}")
            return
        del state.out[:sent]
        if len(state.out) > MAX_ACK_BACKLOG:
            self._drop(selector, conn, f"left {len(state.out)} bytes of acknowledgements unread")
            return
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if state.out else 0)
        if selector.get_key(conn).events != wanted:
            selector.modify(conn, wanted)

    def _close_idle(self, selector) -> None:
        oldest = time.monotonic() - self.idle_timeout_s
        for conn in [c for c, state in self.connections.items() if state.last_active < oldest]:
            self.idle_closed += 1
            self._drop(selector, conn, f"idle for {self.idle_timeout_s:g}s")

    def _drop(self, selector, conn: socket.socket, why: str) -> None:
        state = self.connections.pop(conn)
        selector.unregister(conn)
        conn.close()
        self.info["connections"] = len(self.connections)
        for line in state.splitter.flush():
            self._line(line, state.source, time.perf_counter())  # no one is left to acknowledge it to
        log("info", "tcp_closed", source=state.source, reason=why)

    def close(self) -> None:
        self.server.close()
        for end in (self._wake_r, self._wake_w):
            if end is not None:
                end.close()


class SerialSource(Source):
    """A serial port (pyserial); reopened every second while it is gone (unplugged, not yet there)."""

    name = "serial"

    def __init__(self, config, *args):
        super().__init__(*args)
        self.port, self.baudrate = config.port, config.baudrate

    def run(self) -> None:
        import serial  # pyserial: only a device with a serial sensor needs it

        source = f"serial:{self.port}"
        while not self.stop.is_set():
            try:
                with serial.Serial(self.port, self.baudrate, timeout=0.2) as port:
                    log("info", "serial_opened", source=source, baudrate=self.baudrate)
                    splitter = LineSplitter(self.max_line_bytes)
                    while not self.stop.is_set():
                        data = port.read(max(1, port.in_waiting))
                        if data:
                            self._lines(splitter, data, source)
            except (serial.SerialException, OSError) as e:
                log("warning", "serial_unavailable", source=source, error=str(e), retry_s=RETRY_S)
                self.stop.wait(RETRY_S)


class MqttSource(Source):
    """Subscribes to a topic pattern whose '+' level is the stream id.

    MQTT v5 with clean_start false and a session expiry: the broker keeps the
    subscription and queues QoS 1 messages while we are away. Messages are
    acknowledged manually, after the sample has been processed and its
    forecast handed to the sinks, so a crash before that gets them redelivered
    (and a redelivered sample already processed is dropped as a duplicate).
    """

    name = "mqtt"

    def __init__(self, config, *args):
        super().__init__(*args)
        self.config = config
        self.levels = config.topic.split("/")
        self.id_level = self.levels.index("+")
        self.client = None
        self.info.update(host=config.host, port=config.port, topic=config.topic, connected=False, subscribed=False)

    def run(self) -> None:
        from paho.mqtt.client import CallbackAPIVersion, Client
        from paho.mqtt.enums import MQTTProtocolVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        c = self.config
        client = Client(CallbackAPIVersion.VERSION2, client_id=c.client_id, protocol=MQTTProtocolVersion.MQTTv5,
                        manual_ack=True)
        without_matcher_cycles(client)
        client.on_connect, client.on_disconnect, client.on_message = self._connected, self._disconnected, self._message
        client.on_subscribe = self._subscribed
        client.on_connect_fail = lambda client, userdata: log(
            "warning", "mqtt_unreachable", source=self.name, host=c.host, port=c.port, retrying=True)
        client.reconnect_delay_set(1, 5)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = c.session_expiry_s
        # No Receive Maximum: one of 20,000 made the durable test broker fall behind under the kill test (its
        # PUBACKs to the publisher timed out; 48 s without it, 160 s and a failure with it). While the service
        # pauses (backpressure), paho's thread blocks in emit() and the rest waits at the broker.
        self.client = client
        client.connect_async(c.host, c.port, c.keepalive_s, clean_start=False, properties=properties)
        client.loop_start()
        self.stop.wait()

    def _connected(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log("warning", "mqtt_refused", source=self.name, reason=str(reason_code))
            return
        self.info["connected"] = True
        log("info", "mqtt_connected", source=self.name, session_present=bool(flags.session_present),
            topic=self.config.topic)
        client.subscribe(self.config.topic, qos=self.config.qos)

    def _subscribed(self, client, userdata, mid, reason_codes, properties) -> None:
        """SUBACK: from here on the broker routes the topic's messages to us (what a caller can wait for)."""
        refused = [str(code) for code in reason_codes if code.is_failure]
        self.info["subscribed"] = not refused
        if refused:
            log("error", "mqtt_subscribe_refused", source=self.name, topic=self.config.topic, reasons=refused)
        else:
            log("info", "mqtt_subscribed", source=self.name, topic=self.config.topic)

    def _disconnected(self, client, userdata, flags, reason_code, properties) -> None:
        self.info["connected"] = False
        self.info["subscribed"] = False
        if not self.stop.is_set():
            log("warning", "mqtt_disconnected", source=self.name, reason=str(reason_code), reconnecting=True)

    def _message(self, client, userdata, message) -> None:
        received = time.perf_counter()
        ack = (lambda mid=message.mid, qos=message.qos: client.ack(mid, qos)) if message.qos else None
        source = f"mqtt:{message.topic}"
        levels = message.topic.split("/")
        if len(levels) != len(self.levels):
            self.emit([Rejection("bad_id", f"topic {message.topic[:80]!r} does not match {self.config.topic}",
                                 source, ack)])
            return
        payload = message.payload
        breaks = payload.count(b"\n")  # a payload of 4 MB of newlines must not be 4 million parses
        if len(payload) > self.max_line_bytes * MQTT_BATCH_LINES or breaks > MQTT_BATCH_LINES:
            self.emit([Rejection("oversized", f"payload of {len(payload)} bytes, {breaks + 1} lines (at most "
                                 f"{MQTT_BATCH_LINES} lines of {self.max_line_bytes} bytes)", source, ack)])
            return
        stream = levels[self.id_level]
        if not STREAM_ID.match(stream):
            self.emit([Rejection("bad_id", f"stream id {stream[:80]!r} in topic", source, ack)])
            return
        # one sample per line: a gateway may batch a stream's samples in one message (at 5,000 messages a second
        # paho's own packet handling was 2/3 of the service's CPU, docs/DESIGN-NOTES.md)
        items = []
        for line in payload.split(b"\n"):
            item = self._item(line if len(line) <= self.max_line_bytes else None, source, received, stream=stream)
            if item is not None:
                items.append(item)
        if not items:
            items = [Rejection("malformed", "empty payload", source)]
        if ack is not None:  # acknowledged once the whole message is processed: its items are handled in order
            items[-1].ack = ack
        self.emit(items)

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


def without_matcher_cycles(client) -> None:
    """paho looks up per-topic callbacks for every message it receives (MQTTMatcher.iter_match), and that
    lookup's recursive inner generator is a reference cycle: 5 objects a message that only the cyclic collector
    frees (150,000 for 30,000 messages under make loadgen). The service adds no per-topic callbacks, so the lookup
    is made to return at once while there are none; with some it is paho's own. Left as paho made it if a
    release renames what this relies on (tests/test_service_mqtt.py counts the cyclic garbage)."""
    from paho.mqtt.matcher import MQTTMatcher

    class CallbackFilters(MQTTMatcher):
        def iter_match(self, topic):
            if not self._root._children:  # no message_callback_add: nothing can match
                return iter(())
            return super().iter_match(topic)

    filters = getattr(client, "_on_message_filtered", None)
    if type(filters) is MQTTMatcher and not filters._root._children:
        client._on_message_filtered = CallbackFilters()


SOURCES = {"stdin": StdinSource, "file": FileSource, "tcp": TcpSource, "serial": SerialSource, "mqtt": MqttSource}


def start_sources(configs: dict, emit: Callable, channels: int, max_line_bytes: int,
                  stop: threading.Event, bounds=None, max_restarts: int = 5) -> list[Source]:
    sources = []
    for kind, config in configs.items():
        if kind == "stdin" and not config.enabled:
            continue
        args = (emit, channels, max_line_bytes, stop, bounds, max_restarts)
        sources.append(SOURCES[kind](*args) if kind == "stdin" else SOURCES[kind](config, *args))
    for source in sources:
        source.start()
    return sources
