"""Sinks: where forecasts and anomaly events go, one batch of records at a time.

A record is a dict: a forecast {"id", "t", "step", "prediction", "residual",
"score", "warm"} or an anomaly event {"id", "t", "event": "start"|"end",
"score"}. `write(records)` is called once per model batch.
"""
from __future__ import annotations

import json
import sys
import threading

from edge_runtime.service.log import log


class JsonlSink:
    """JSON lines to stdout or a file (appended; one write and flush per batch)."""

    def __init__(self, config):
        self.path = config.path
        self.stream = sys.stdout if config.path == "-" else open(config.path, "a", buffering=1 << 16)
        self.dropped = 0
        if self.stream is not sys.stdout and _ends_mid_line(config.path):
            self.stream.write("\n")  # a power cut tore the last line: keep it from merging with the next

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError) as e:  # disk full, closed stdout: count and keep serving
            self.dropped += len(records)
            log("error", "sink_write_failed", sink="jsonl", path=self.path, error=str(e), records=len(records))

    def close(self) -> None:
        if self.stream is not sys.stdout:
            self.stream.close()


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

    def write(self, records: list[dict]) -> None:
        from paho.mqtt.client import MQTT_ERR_NO_CONN, MQTT_ERR_SUCCESS

        prefix, qos = self.config.prefix, self.config.qos
        for r in records:
            kind = r["type"]  # "prediction" or "anomaly": the topic's last level
            if kind == "prediction" and not self.config.predictions:
                continue
            info = self.client.publish(f"{prefix}/{r['id']}/{kind}", json.dumps(r, separators=(",", ":")), qos=qos)
            if info.rc not in (MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN):  # NO_CONN: queued for the reconnect
                self.dropped += 1
            else:
                self._last = info

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
