"""The service's HTTP side ([http] in the config): /metrics for Prometheus and a live page at /.

    /metrics                  Prometheus text format (prometheus_client's exposition)
    /                         the live page (static/index.html + static/live.js: plain canvas, no CDN)
    /api/live?stream=ID&n=N[&after=T]
                              what the page polls: the stream's last N samples (only those after t=T when
                              given), forecasts, scores, anomaly spans, the list of streams, the service's health

Unauthenticated and read-only. It listens on 127.0.0.1 unless [http] host
says otherwise: reach it from elsewhere through an ssh tunnel. Runs in its own
threads (one per connection, kept open between requests: HTTP/1.1 keep-alive,
as a browser polling the page uses it); it only reads what the main thread writes.
"""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from edge_runtime.service.config import is_loopback
from edge_runtime.service.log import log
from edge_runtime.service.metrics import Monitor, health, registry_for

STATIC = Path(__file__).with_name("static")
PAGES = {"/": ("index.html", "text/html; charset=utf-8"), "/live.js": ("live.js", "text/javascript; charset=utf-8")}
MAX_POINTS = 2000  # n beyond the ring is clipped anyway; this bounds the JSON a request can ask for
MAX_CONNECTIONS = 32  # open at once; each holds a thread until it has been idle for _Handler.timeout
_BUSY_TEXT = b"too many open connections: close one and retry\n"
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_TEXT), _BUSY_TEXT))


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client that hangs on must not hold the service's exit
    allow_reuse_address = True
    request_queue_size = 64  # the listen backlog: a burst of connections waits to be accepted (and counted)

    def __init__(self, *args, **kwargs):
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        """A thread per connection, up to MAX_CONNECTIONS: beyond that a client that opens connections and
        sits on them would hold a thread (and its stack) each; it gets a 503 and a closed socket instead."""
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(BUSY)  # ~170 bytes: fits the socket's send buffer, never blocks the accept loop
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start (out of threads): its slot is free again
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class WebServer:
    def __init__(self, service, monitor: Monitor, host: str, port: int):
        self.service, self.monitor = service, monitor
        self.registry = registry_for(service, monitor)
        self.pages = {path: ((STATIC / name).read_bytes(), kind) for path, (name, kind) in PAGES.items()}
        handler = type("Handler", (_Handler,), {"web": self})
        server_class = type("Server6", (_Server,), {"address_family": socket.AF_INET6}) if ":" in host else _Server
        try:
            self.server = server_class((host, port), handler)
        except OSError as e:
            raise OSError(f"[http] cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.info = {"host": host, "port": self.server.server_address[1]}
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    def start(self) -> "WebServer":
        self.thread.start()
        log("info", "http_listening", **self.info)
        if not is_loopback(self.info["host"]):  # allowed by [http] allow_remote = true: say so at every start
            log("warning", "http_open_to_network", **self.info,
                why="no authentication: anyone who reaches this address reads the metrics and the streams")
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def live(self, query: dict) -> dict:
        streams = self.monitor.streams()
        wanted = query.get("stream", [streams[0] if streams else ""])[0]
        try:
            n = min(max(int(query.get("n", ["300"])[0]), 1), MAX_POINTS)
            after = float(query["after"][0]) if "after" in query else None
        except ValueError:
            n, after = 300, None
        return {"streams": streams, "health": health(self.service), "live": self.monitor.live(wanted, n, after)}


class _Handler(BaseHTTPRequestHandler):
    web: WebServer
    timeout = 10  # seconds a connection may sit idle
    server_version = "edge-rnn"
    # Keep-alive: a page polls twice a second, and a new connection per poll cost a thread and http.server's
    # setup each time (~0.3 ms of CPU a request, DESIGN-NOTES "Metrics and the live page").
    protocol_version = "HTTP/1.1"
    # ...but on a kept connection a response in two writes (headers, then body) waits for the client's
    # delayed ACK of the first under Nagle's algorithm: 44 ms a request, measured. So the answer is buffered
    # into one write (http.server flushes it after each request) and Nagle is off for bodies past the buffer.
    wbufsize = -1
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        url = urlsplit(self.path)
        if url.path == "/metrics":
            self._send(200, generate_latest(self.web.registry), CONTENT_TYPE_LATEST)
        elif url.path in self.web.pages:
            self._send(200, *self.web.pages[url.path])
        elif url.path == "/api/live":
            body = json.dumps(self.web.live(parse_qs(url.query)), allow_nan=False).encode()
            self._send(200, body, "application/json")
        else:
            self._send(404, b"not found: try /, /metrics or /api/live\n", "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, kind: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002 (http.server's signature)
        pass  # a page polling twice a second must not fill the journal; errors surface as the client's
