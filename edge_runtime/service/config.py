"""The edge service's one TOML config: read with tomllib, every key known, paths made absolute.

Relative paths resolve against the config file's folder (so a release folder
can carry its config). An unknown key or section is an error naming it and
where it is: a typo must not silently fall back to a default.
"""
from __future__ import annotations

import ipaddress
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from edge_runtime.backends import BACKENDS
from edge_runtime.bundle_files import BundleError, read_regular_file
from edge_runtime.service.wal import FSYNC_POLICIES

# Upper bounds: a typo of a few zeros must be a config error, not a MemoryError or a frozen service.
MAX_STREAMS = 100_000  # each stream holds a state row (a few KB at most) in arrays preallocated at start
MAX_QUEUE = 1_000_000
MAX_LINE_BYTES = 1 << 20
MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes
MQTT_PACKET_IDS = 65535  # a paho client holds at most this many unacknowledged QoS 1/2 messages
MAX_INTERVAL_S = 86400.0  # snapshot/status intervals; longer would look like a frozen service


class ConfigError(ValueError):
    """A config problem; the message names the file and the key."""


@dataclass
class StreamsConfig:
    max_streams: int = 256  # when full, a new id takes the slot of the least recently used idle stream
    #  (see evict_when_full_after_s), else it is rejected (reason stream_limit)
    max_batch: int = 256  # rows per batched interpreter call
    batched: bool = True  # use the bundle's batched companion when the variant has one
    max_gap_s: float = 300.0  # a longer silence between two samples of a stream resets its state
    warmup_steps: int = 16  # after a cold start or reset: forecasts flow, anomaly events wait this many samples
    idle_evict_s: float = 3600.0  # a stream without an accepted sample this long is evicted (state freed, counted)
    evict_when_full_after_s: float = 60.0  # with max_streams full, a new id evicts the least recently used
    #  stream if that one has been silent at least this long (a flood of new ids cannot push out active streams)


@dataclass
class SnapshotConfig:
    interval_s: float = 10.0  # and on SIGTERM/SIGINT


@dataclass
class WalConfig:
    enabled: bool = True  # log accepted samples between snapshots: a kill -9 or power cut loses nothing acknowledged
    fsync: str = "batch"  # "batch": fsync every batch before its forecasts and acknowledgements; "interval": at
    #  most every fsync_interval_s, forecasts and acknowledgements wait for it; "off": no fsync (survives a crash,
    #  not a power cut)
    fsync_interval_s: float = 0.05


@dataclass
class StatusConfig:
    interval_s: float = 1.0


@dataclass
class InputConfig:
    max_line_bytes: int = 4096  # longer lines are rejected (oversized)
    queue_size: int = 20000  # samples waiting for the model; sources block (backpressure) beyond it
    max_source_restarts: int = 5  # a source failing more often within a minute stops the service (exit 1)
    log_rejections_per_s: int = 20  # per reason; the rest are counted and summarized, not each logged
    value_range_std: float = 1000.0  # a value farther than this many stds from the channel's mean: out_of_range
    future_horizon_s: float = 86400.0  # t beyond max(wall clock, stream's newest t) + this: future_timestamp
    stall_timeout_s: float = 300.0  # input paused for a sink (at its high-water mark) that delivered nothing this
    #  long: the service stops with exit 1 (state failed, the error names the sink); 0: wait for it forever


@dataclass
class LogConfig:
    max_per_s: int = 20  # log lines per event and reason per second; the rest are counted in "<event>_suppressed"


@dataclass
class StdinSource:
    enabled: bool = True


@dataclass
class FileSource:
    path: str = ""
    follow: bool = False  # keep reading as the file grows, like tail -f


@dataclass
class TcpSource:
    host: str = "127.0.0.1"
    port: int = 7878  # 0: any free port (status.json says which)
    allow_remote: bool = False  # a non-loopback host is refused without it: the line protocol has no authentication
    max_connections: int = 256  # one more client is accepted and closed at once (counted); well under the fd limit
    idle_timeout_s: float = 600.0  # a client that sends nothing this long is closed (counted)
    ack: bool = False  # write "ack <n>" for the connection's n-th line once it is durable and forecast (see README)


@dataclass
class SerialSource:
    port: str = ""  # e.g. /dev/ttyUSB0
    baudrate: int = 115200


@dataclass
class MqttSource:
    host: str = "127.0.0.1"
    port: int = 1883
    topic: str = "sensors/+"  # the + level is the stream id
    client_id: str = "edge-rnn-in"
    qos: int = 1
    session_expiry_s: int = 86400  # the broker keeps our subscription and queued messages this long
    keepalive_s: int = 30


@dataclass
class JsonlSink:
    path: str = "-"  # "-" is stdout
    rotate_bytes: int = 64 << 20  # a file that would grow past this is renamed to <path>.1 first; 0: never
    keep: int = 3  # rotated files kept (<path>.1 newest ... <path>.<keep> oldest)


@dataclass
class MqttSink:
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "edge"  # publishes <prefix>/<id>/prediction and <prefix>/<id>/anomaly
    client_id: str = "edge-rnn-out"
    qos: int = 1
    predictions: bool = True  # false: publish anomaly events only
    max_queued: int = 10000  # high-water mark: records not yet acknowledged by the broker (a slow or absent
    #  broker); at it the service stops taking input until PUBACKs come back. Nothing is dropped. At most 65,535
    keepalive_s: int = 30


@dataclass
class HttpConfig:
    """/metrics (Prometheus) and the live page at /; the section absent: no HTTP server at all.

    Unauthenticated: keep host on the loopback (reach it through an ssh tunnel) unless the network is trusted."""
    host: str = "127.0.0.1"
    port: int = 9464  # 0: any free port (the bound one is in status.json under "http")
    max_stream_labels: int = 64  # per-stream metrics keep this many stream labels; the rest count as stream="_other"
    history: int = 300  # samples per stream the live page can show
    allow_remote: bool = False  # a non-loopback host is refused without it: nothing here asks who is looking


SOURCE_KINDS = {"stdin": StdinSource, "file": FileSource, "tcp": TcpSource, "serial": SerialSource,
                "mqtt": MqttSource}
SINK_KINDS = {"jsonl": JsonlSink, "mqtt": MqttSink}


@dataclass
class ServiceConfig:
    path: Path  # the config file
    bundle: Path
    state_dir: Path
    variant: str | None = None
    backend: str | None = None
    fresh_start: bool = False  # refuse-or-replace: true starts fresh over another bundle's snapshot
    trusted_key: Path | None = None  # Ed25519 public key (PEM): the bundle must be signed with it
    streams: StreamsConfig = field(default_factory=StreamsConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    wal: WalConfig = field(default_factory=WalConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    input: InputConfig = field(default_factory=InputConfig)
    log: LogConfig = field(default_factory=LogConfig)
    sources: dict = field(default_factory=dict)  # kind -> source dataclass
    sinks: dict = field(default_factory=dict)  # kind -> sink dataclass
    http: HttpConfig | None = None  # None: no /metrics, no live page


def _fill(cls, table: dict, where: str):
    """A dataclass from a TOML table; unknown keys and wrong types are errors naming the key."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: should be a table, got {table!r}")
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
        default = getattr(cls(), key)
        expected = type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise ConfigError(f"{where}.{key}: should be {expected.__name__}, got {value!r}")
        if expected is float and not math.isfinite(value):  # TOML has nan and inf literals
            raise ConfigError(f"{where}.{key}: should be a finite number, got {value!r}")
        values[key] = value
    return cls(**values)


def _section(kinds: dict, table, where: str) -> dict:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: should be a table of {', '.join(kinds)}")
    out = {}
    for kind, sub in table.items():
        if kind not in kinds:
            raise ConfigError(f"{where}: unknown kind {kind!r} (known: {', '.join(kinds)})")
        out[kind] = _fill(kinds[kind], sub, f"{where[:-1]}.{kind}]")  # "file [sources]" -> "file [sources.tcp]"
    return out


TOP_KEYS = {"bundle", "state_dir", "variant", "backend", "fresh_start", "streams", "snapshot", "wal", "status",
            "input", "log", "sources", "sinks", "trusted_key", "http"}


def parse_config(text: str, path: Path) -> ServiceConfig:
    where = str(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML ({e})") from None
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(TOP_KEYS))})")
    for key in ("bundle", "state_dir"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{where}: {key!r} is required (a folder path)")
    for key in ("variant", "backend", "trusted_key"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"{where}: {key!r} should be a string")
    if not isinstance(raw.get("fresh_start", False), bool):
        raise ConfigError(f"{where}: 'fresh_start' should be true or false")
    base = path.resolve().parent
    config = ServiceConfig(
        path=path, bundle=(base / raw["bundle"]).resolve(), state_dir=(base / raw["state_dir"]).resolve(),
        variant=raw.get("variant"), backend=raw.get("backend"), fresh_start=raw.get("fresh_start", False),
        trusted_key=(base / raw["trusted_key"]).resolve() if "trusted_key" in raw else None,
        streams=_fill(StreamsConfig, raw.get("streams", {}), f"{where} [streams]"),
        snapshot=_fill(SnapshotConfig, raw.get("snapshot", {}), f"{where} [snapshot]"),
        wal=_fill(WalConfig, raw.get("wal", {}), f"{where} [wal]"),
        status=_fill(StatusConfig, raw.get("status", {}), f"{where} [status]"),
        input=_fill(InputConfig, raw.get("input", {}), f"{where} [input]"),
        log=_fill(LogConfig, raw.get("log", {}), f"{where} [log]"),
        sources=_section(SOURCE_KINDS, raw.get("sources", {}), f"{where} [sources]"),
        sinks=_section(SINK_KINDS, raw.get("sinks", {}), f"{where} [sinks]"),
        http=_fill(HttpConfig, raw["http"], f"{where} [http]") if "http" in raw else None)
    _check(config, where, base)
    return config


def _check(config: ServiceConfig, where: str, base: Path) -> None:
    s, i = config.streams, config.input
    _within(f"{where} [streams].max_streams", s.max_streams, 1, MAX_STREAMS)
    _within(f"{where} [streams].max_batch", s.max_batch, 1, MAX_STREAMS)
    _within(f"{where} [streams].max_gap_s", s.max_gap_s, 1e-3, None)
    _within(f"{where} [streams].warmup_steps", s.warmup_steps, 0, None)
    _within(f"{where} [streams].idle_evict_s", s.idle_evict_s, 1e-3, None)
    _within(f"{where} [streams].evict_when_full_after_s", s.evict_when_full_after_s, 1e-3, None)
    _within(f"{where} [snapshot].interval_s", config.snapshot.interval_s, 1e-3, MAX_INTERVAL_S)
    _within(f"{where} [wal].fsync_interval_s", config.wal.fsync_interval_s, 1e-3, MAX_INTERVAL_S)
    if config.wal.fsync not in FSYNC_POLICIES:
        raise ConfigError(f"{where} [wal].fsync: should be one of {', '.join(FSYNC_POLICIES)}, got {config.wal.fsync!r}")
    _within(f"{where} [status].interval_s", config.status.interval_s, 1e-3, MAX_INTERVAL_S)
    _within(f"{where} [input].max_line_bytes", i.max_line_bytes, 16, MAX_LINE_BYTES)
    _within(f"{where} [input].queue_size", i.queue_size, 1, MAX_QUEUE)
    _within(f"{where} [input].log_rejections_per_s", i.log_rejections_per_s, 0, None)
    _within(f"{where} [log].max_per_s", config.log.max_per_s, 1, None)
    _within(f"{where} [input].max_source_restarts", i.max_source_restarts, 0, 1000)
    _within(f"{where} [input].value_range_std", i.value_range_std, 1e-6, None)
    _within(f"{where} [input].future_horizon_s", i.future_horizon_s, 1e-3, None)
    _within(f"{where} [input].stall_timeout_s", i.stall_timeout_s, 0, None)
    if config.backend is not None and config.backend not in BACKENDS:
        raise ConfigError(f"{where}: 'backend' should be one of {', '.join(BACKENDS)}, got {config.backend!r}")
    _check_ports(config, where)
    if not config.sources:
        raise ConfigError(f"{where}: no [sources.*] table: nothing would feed the model")
    if not config.sinks:
        raise ConfigError(f"{where}: no [sinks.*] table: predictions would go nowhere")
    if "file" in config.sources:
        if not config.sources["file"].path:
            raise ConfigError(f"{where} [sources.file]: 'path' is required")
        config.sources["file"].path = str(base / config.sources["file"].path)
    if "serial" in config.sources and not config.sources["serial"].port:
        raise ConfigError(f"{where} [sources.serial]: 'port' is required")
    if "jsonl" in config.sinks and config.sinks["jsonl"].path != "-":
        config.sinks["jsonl"].path = str(base / config.sinks["jsonl"].path)
    for section, table in (("sources", config.sources), ("sinks", config.sinks)):
        mqtt = table.get("mqtt")
        if mqtt is not None and mqtt.qos not in (0, 1, 2):
            raise ConfigError(f"{where} [{section}.mqtt]: qos must be 0, 1 or 2")
    http = config.http
    if http is not None and (not 0 <= http.port <= 65535 or http.max_stream_labels < 1 or http.history < 2):
        raise ConfigError(f"{where} [http]: port 0-65535, max_stream_labels >= 1, history >= 2")
    if http is not None and not http.allow_remote and not is_loopback(http.host):
        raise ConfigError(f"{where} [http].host: {http.host!r} is reachable from other machines and /metrics and "
                          "the live page have no authentication; use 127.0.0.1 (an ssh tunnel reaches it), or set "
                          "allow_remote = true on a network you trust")
    mqtt = config.sources.get("mqtt")
    if mqtt is not None and mqtt.topic.count("+") != 1 or (mqtt is not None and "#" in mqtt.topic):
        raise ConfigError(f"{where} [sources.mqtt]: topic needs exactly one '+' level (the stream id) and no '#'")


def _within(name: str, value, low, high) -> None:
    """low <= value <= high (high None: no upper bound), else an error naming the key and the range."""
    if value < low or (high is not None and value > high):
        wanted = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise ConfigError(f"{name}: should be {wanted}, got {value!r}")


def _check_ports(config: ServiceConfig, where: str) -> None:
    tcp = config.sources.get("tcp")
    if tcp is not None:
        _within(f"{where} [sources.tcp].port", tcp.port, 0, 65535)
        _within(f"{where} [sources.tcp].max_connections", tcp.max_connections, 1, 65535)
        _within(f"{where} [sources.tcp].idle_timeout_s", tcp.idle_timeout_s, 1e-3, None)
        if not tcp.allow_remote and not is_loopback(tcp.host):
            raise ConfigError(f"{where} [sources.tcp].host: {tcp.host!r} is reachable from other machines and the "
                              "line protocol has no authentication; use 127.0.0.1, or set allow_remote = true "
                              "on a network you trust")
    for section, table in (("sources", config.sources), ("sinks", config.sinks)):
        mqtt = table.get("mqtt")
        if mqtt is not None:
            _within(f"{where} [{section}.mqtt].port", mqtt.port, 1, 65535)
            _within(f"{where} [{section}.mqtt].keepalive_s", mqtt.keepalive_s, 1, 65535)
    if "mqtt" in config.sources:
        _within(f"{where} [sources.mqtt].session_expiry_s", config.sources["mqtt"].session_expiry_s, 0, 2**32 - 1)
    if "jsonl" in config.sinks:
        jsonl = config.sinks["jsonl"]
        if jsonl.rotate_bytes:
            _within(f"{where} [sinks.jsonl].rotate_bytes", jsonl.rotate_bytes, 1024, None)
        _within(f"{where} [sinks.jsonl].keep", jsonl.keep, 1, 1000)
    if "mqtt" in config.sinks:
        _within(f"{where} [sinks.mqtt].max_queued", config.sinks["mqtt"].max_queued, 1, MQTT_PACKET_IDS)
    if "serial" in config.sources:
        _within(f"{where} [sources.serial].baudrate", config.sources["serial"].baudrate, 1, 10_000_000)


def is_loopback(host: str) -> bool:
    """Only this machine can connect: localhost or a loopback address ("" and 0.0.0.0 mean every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to any interface


def read_config_text(path: str | Path) -> str:
    """The text of the config at `path`: a regular UTF-8 file of at most MAX_CONFIG_BYTES (a FIFO would block
    the start forever), or ConfigError naming it. deploy reads a release's config through it too."""
    try:
        return read_regular_file(path, MAX_CONFIG_BYTES, "config file").decode("utf-8")
    except BundleError as e:
        raise ConfigError(str(e)) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: config file is not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_config(path: str | Path) -> ServiceConfig:
    path = Path(path)
    return parse_config(read_config_text(path), path)
