"""Issue 14's must-show for loss: QoS 1 samples through a real Mosquitto while the service is killed
with SIGKILL 20 times and the broker 3 times; every sample acknowledged to the publisher produces
exactly one forecast in the sink after deduplication by (id, t).

Mosquitto 2.0 writes a PUBACK before the save of the loop turn that received the message, so a
broker kill can lose what it acknowledged in that very turn (measured in the design notes). A lost
sample whose PUBACK reached the publisher from BROKER_WINDOW_S before a broker kill until the
publisher's first reconnect after it (a PUBACK sent just before the kill can be read just after it)
is counted as the broker's; any other is the service's, and there must be none.
"""
from __future__ import annotations

import random
import threading
import time

import pytest

from pipeline.broker import Mosquitto
from service_helpers import OrderedPublisher, ServiceProcess, read_jsonl, wait_for, write_config
from traffic import sensor_value

# 100 samples/s: the durable broker rewrites its whole database every loop turn, so the more the service lags
# behind, the slower the broker gets. At 200/s with two CPU-bound processes beside it, its PUBACK rate fell from
# 200/s to 26/s within 4 min (3 of 3 runs failed); at 100/s it kept up (acknowledged = sent - 8 throughout).
SENSORS, RATE_HZ = 10, 10
SERVICE_KILLS, BROKER_KILLS = 20, 3
BROKER_WINDOW_S = 1.0  # generous: a loop turn of the broker at this load takes milliseconds


def _session_client(client_id: str, port: int, on_message=None):
    """A paho client with a persistent session (clean_start false, 1 h expiry) that reconnects by itself."""
    from paho.mqtt.client import CallbackAPIVersion, Client
    from paho.mqtt.enums import MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(0.2, 1)
    if on_message is not None:
        client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, 30, clean_start=False, properties=properties)
    client.loop_start()
    return client


class Load:
    """A paced QoS 1 publisher of SENSORS streams, in order across broker kills (OrderedPublisher)."""

    def __init__(self, port: int):
        self.publisher = OrderedPublisher(_session_client("loss-pub", port))
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        k = 0
        start = time.monotonic()
        while not self.stop.is_set():
            for s in range(SENSORS):
                t = round(1000.0 + k * 0.05, 3)
                v = sensor_value(s, k)
                self.publisher.publish(f"sensors/q{s}", f"{t},{v[0]},{v[1]}".encode(), key=(f"q{s}", t))
                self.sent += 1
            k += 1
            time.sleep(max(0.0, start + k / RATE_HZ - time.monotonic()))  # pacing only


@pytest.mark.slow
def test_service_and_broker_killed_under_mqtt_load_nothing_acknowledged_is_lost(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["lstm"]
    broker = Mosquitto(tmp_path / "broker").start()
    broker_kills: list[float] = []  # monotonic times
    config = write_config(tmp_path, bundle, f'[sources.mqtt]\nport = {broker.port}\nclient_id = "loss-in"\n',
                          '[sinks.jsonl]\npath = "out.jsonl"\n',
                          "[snapshot]\ninterval_s = 1.0\n[status]\ninterval_s = 0.1\n[wal]\nfsync = \"batch\"\n")
    rng = random.Random(14)
    broker_kill_runs = set(rng.sample(range(2, SERVICE_KILLS - 1), BROKER_KILLS))
    load = None
    started = time.monotonic()
    try:
        for run in range(SERVICE_KILLS + 1):
            service = ServiceProcess(config)
            service.wait_running()
            wait_for(lambda s=service: s.log_events("mqtt_subscribed"), 60, what="the service subscribed")
            if load is None:
                load = Load(broker.port)
                load.thread.start()
            if run == SERVICE_KILLS:
                break
            target = service.counters().get("samples", 0) + rng.randrange(50, 300)  # killed 0.5-3 s in
            wait_for(lambda s=service, n=target: s.counters().get("samples", 0) >= n, 60,
                     what="the service forecasting under load")
            if run in broker_kill_runs:  # mid-stream, the service connected: it must reconnect and go on
                broker_kills.append(time.monotonic())
                broker.kill()
                broker.start()
                wait_for(lambda s=service: len(s.log_events("mqtt_subscribed")) >= 2, 60,
                         what="the service back on the restarted broker")
                target = service.counters()["samples"] + 100
                wait_for(lambda s=service, n=target: s.counters()["samples"] >= n, 60,
                         what="forecasts after the broker restart")
            service.kill()
        load.stop.set()
        load.thread.join(10)
        try:
            load.publisher.flush()
            wait_for(lambda: len(load.publisher.acked_at) >= load.sent, 60,
                     what="the publisher's last messages acknowledged")
        except AssertionError:
            client = load.publisher.client
            out = client._out_messages
            raise AssertionError(f"sent {load.sent} acked {len(load.publisher.acked_at)} paho out {len(out)} states "
                                 f"{sorted({m.state for m in out.values()})} inflight {client._inflight_messages} "
                                 f"connected {client.is_connected()} refused {load.publisher.refused}") from None
        acked = load.publisher.acked_at

        def unforecast() -> set:
            return set(acked) - {(r["id"], r["t"]) for r in read_jsonl(tmp_path / "out.jsonl")[0]}

        def reconnected_after(kill: float) -> float:
            # until then every PUBACK came from the killed broker: read from the socket after its death
            return min((c for c in load.publisher.connects if c > kill), default=float("inf"))
        # per broker kill, when a PUBACK may be for a message the broker lost: from the window before the kill
        # until the publisher reconnected (the load has stopped: kills and connects are final)
        broker_windows = [(kill - BROKER_WINDOW_S, reconnected_after(kill)) for kill in broker_kills]

        def in_broker_window(key) -> bool:
            return any(start <= acked[key] < end for start, end in broker_windows)

        def unexplained() -> list:
            return [k for k in unforecast() if not in_broker_window(k)]
        # wait until what is left unforecast is only what a broker kill can explain (or the deadline); 300 s is
        # generous: a sample a broker kill lost, but counted as the service's, kept the wait going to its end
        try:
            wait_for(lambda: not unexplained(), 300, interval=0.5, what="every acknowledged sample forecast")
        except AssertionError:
            left = sorted((acked[k] - started, k) for k in unexplained())
            raise AssertionError(f"{len(left)} acknowledged samples not forecast after 300 s, acknowledged at "
                                 f"{left[0][0]:.1f}-{left[-1][0]:.1f} s (first {left[:3]}); broker kills at "
                                 f"{[round(kill - started, 1) for kill in broker_kills]} s") from None
        assert service.stop() == 0
    finally:
        if load is not None:
            load.stop.set()
            load.publisher.close()
        broker.stop()
    records, torn = read_jsonl(tmp_path / "out.jsonl")
    keys = [(r["id"], r["t"]) for r in records]
    forecasts = set(keys)
    lost = set(acked) - forecasts
    lost_by_broker = {k for k in lost if in_broker_window(k)}  # acknowledged in the turn of a broker kill
    lost_by_service = lost - lost_by_broker
    counts = {"sent": load.sent, "acknowledged": len(acked), "forecasts": len(forecasts),
              "duplicates_removed": len(keys) - len(forecasts), "lost": len(lost),
              "lost_by_service": len(lost_by_service), "lost_by_broker": len(lost_by_broker), "torn_lines": torn,
              "pubacks_refused": load.publisher.refused,
              "service_kills": SERVICE_KILLS, "broker_kills": BROKER_KILLS,
              "wall_s": round(time.monotonic() - started, 1)}
    print(f"\nloss: {counts}")
    assert lost_by_service == set(), sorted(lost_by_service)[:10]
    assert len(lost_by_broker) <= 5 * BROKER_KILLS, counts  # one loop turn of the broker per kill; measured 0-2
    assert forecasts <= {(f"q{s}", round(1000.0 + k * 0.05, 3)) for s in range(SENSORS) for k in range(100_000)}
    steps: dict[str, int] = {}
    for r in sorted(records, key=lambda r: (r["id"], r["t"])):  # every stream's steps run 1, 2, ... once each
        if (r["id"], r["t"]) in steps:
            continue
        assert r["step"] == steps.get(r["id"], 0) + 1, r
        steps[r["id"]] = r["step"]
