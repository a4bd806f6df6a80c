"""Backpressure: a sink that cannot keep up stops the intake; nothing acknowledged is ever dropped.

Before this, a forecast the MQTT sink dropped at its `max_queued` still settled its batch, so the
sample was acknowledged and lost (225,120 of 1,000,000 at 5,000 samples/s). These tests force the
sink-full condition at once with a tiny high-water mark and a burst far above it, through a real
Mosquitto, and a sink whose broker is not there at all.
"""
from __future__ import annotations

import json

from pipeline.broker import Mosquitto, free_port, mqtt_client
from service_helpers import OrderedPublisher, ServiceProcess, read_jsonl, subscribe_and_wait, wait_for, write_config
from traffic import sensor_value

TAKE_MAX = 1024  # edge_runtime.service.service.TAKE_MAX: one batch may overshoot the high-water mark by this


class Forecasts:
    """Every forecast a QoS 1 subscriber receives, as (id, t) keys in arrival order."""

    def __init__(self, port: int, client_id: str):
        self.keys: list = []
        self.client = mqtt_client(client_id, port)
        self.client.on_message = lambda c, u, m: self.keys.append(_key(json.loads(m.payload)))
        subscribe_and_wait(self.client, "edge/+/prediction")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def tear_down(service, *clients, brokers) -> None:
    """Whatever a test started, in order: the MQTT clients, a still running service, then the brokers."""
    for client in clients:
        if client is not None:
            client.close()
    if service is not None and service.proc.poll() is None:
        service.kill()
    for broker in brokers:
        broker.stop()


def _key(record: dict) -> tuple:
    return record["id"], round(record["t"], 6)


def _publish_burst(publisher: OrderedPublisher, streams: int, per_stream: int, prefix: str) -> list:
    sent = []
    for k in range(per_stream):
        for s in range(streams):
            t = 100.0 + k * 0.02
            key = (f"{prefix}{s}", round(t, 6))
            v = sensor_value(s, k)
            publisher.publish(f"sensors/{key[0]}", f"{t},{v[0]},{v[1]}".encode(), key=key)
            sent.append(key)
    return sent


def test_a_sink_over_its_high_water_mark_pauses_the_intake_and_drops_nothing(fixture_bundles, tmp_path):
    """6,000 samples at once into a service whose MQTT sink holds at most 100 unacknowledged records.

    Fails on the code before backpressure: the sink dropped most forecasts (dropped > 0) and their samples
    were acknowledged anyway. Bound asserted: the sink's backlog never passed high water + one batch
    (TAKE_MAX samples, each at most a forecast and an anomaly event)."""
    _, bundle = fixture_bundles["lstm"]
    high_water = 100
    mosquitto = Mosquitto(tmp_path / "broker", durable=False).start()
    service = publisher = forecasts = None
    try:
        forecasts = Forecasts(mosquitto.port, "bp-sub")
        config = write_config(
            tmp_path, bundle, f'[sources.mqtt]\nport = {mosquitto.port}\ntopic = "sensors/+"\nclient_id = "bp-in"\n',
            f'[sinks.jsonl]\npath = "out.jsonl"\n[sinks.mqtt]\nport = {mosquitto.port}\nclient_id = "bp-out"\n'
            f"max_queued = {high_water}\n", "[streams]\nmax_streams = 20\n")
        service = ServiceProcess(config)
        service.wait_running()
        wait_for(lambda: service.log_events("mqtt_subscribed"), 60, what="the service's SUBACK")
        publisher = OrderedPublisher.connect(mosquitto.port, "bp-pub")
        sent = _publish_burst(publisher, streams=20, per_stream=300, prefix="b")
        wait_for(lambda: len(publisher.acked) == len(sent), 120, what="the broker's PUBACK for every sample")
        acknowledged = set(publisher.acked)

        def all_forecast():
            dropped = service.counters().get("sink_dropped", 0)
            assert not dropped, f"the sink dropped {dropped} forecasts of acknowledged samples"
            return acknowledged <= set(forecasts.keys)
        wait_for(all_forecast, 180, interval=0.2, what="a forecast for every acknowledged sample")
        wait_for(lambda: service.counters().get("unacknowledged_batches") == 0, 60,
                 what="every batch settled and acknowledged to the broker")
        assert service.stop() == 0
        status = json.loads((tmp_path / "state" / "status.json").read_text())
        assert status["counters"]["sink_dropped"] == 0
        assert status["counters"]["sinks"]["mqtt"]["dropped"] == 0 and status["counters"]["sinks"]["jsonl"]["dropped"] == 0
        assert status["counters"]["samples"] == len(sent)
        bp = status["backpressure"]
        assert bp["pauses"] >= 1, "the burst never filled the sink: the test did not test backpressure"
        assert bp["max_backlog"] <= high_water + 2 * TAKE_MAX, bp
        assert bp["max_unsettled_records"] <= 2 * (high_water + 2 * TAKE_MAX), bp
        assert status["queue"] == 0 and not bp["paused"]
        assert set(forecasts.keys) == set(sent)  # exactly one forecast per sample once (id, t) duplicates go
        records, torn = read_jsonl(tmp_path / "out.jsonl")
        keys = [_key(r) for r in records]
        assert torn == 0 and len(keys) == len(set(keys)) == len(sent)  # the JSONL sink: each exactly once
        print(f"\nbackpressure: {json.dumps(bp)}; MQTT duplicates {len(forecasts.keys) - len(set(forecasts.keys))}")
    finally:
        tear_down(service, publisher, forecasts, brokers=[mosquitto])


def test_a_dead_sink_stops_the_service_after_its_stall_timeout_and_nothing_is_lost(fixture_bundles, tmp_path):
    """The sink's broker is not there: the intake pauses, the service gives up after stall_timeout_s (exit 1,
    the error names the sink), having acknowledged nothing. Restarted once that broker is up, every sample
    is forecast: redelivered by the source broker (a duplicate of the logged step) and re-sent from the
    snapshot's unsettled records.

    Fails on the code before backpressure: no stall_timeout_s (a config error), and its sink dropped."""
    _, bundle = fixture_bundles["gru"]
    source = Mosquitto(tmp_path / "source-broker", durable=False).start()
    sink_broker = Mosquitto(tmp_path / "sink-broker", port=free_port())  # not started yet: a dead sink
    service = publisher = forecasts = None
    try:
        config = write_config(
            tmp_path, bundle, f'[sources.mqtt]\nport = {source.port}\ntopic = "sensors/+"\nclient_id = "dead-in"\n',
            f'[sinks.mqtt]\nport = {sink_broker.port}\nclient_id = "dead-out"\nmax_queued = 50\n',
            "[streams]\nmax_streams = 10\n[input]\nstall_timeout_s = 3.0\n")
        service = ServiceProcess(config)
        service.wait_running()
        wait_for(lambda: service.log_events("mqtt_subscribed"), 60, what="the service's SUBACK")
        publisher = OrderedPublisher.connect(source.port, "dead-pub")
        sent = _publish_burst(publisher, streams=10, per_stream=20, prefix="d")
        wait_for(lambda: len(publisher.acked) == len(sent), 60, what="the source broker's PUBACK for every sample")
        code = service.proc.wait(120)
        status = json.loads((tmp_path / "state" / "status.json").read_text())
        assert code == 1 and status["state"] == "failed", status["state"]
        assert "sink mqtt delivered nothing for 3s" in status["error"]
        first = status["counters"]
        assert first["samples"] > 0 and first["sink_dropped"] == 0
        assert status["backpressure"]["paused"] and status["backpressure"]["sink"] == "mqtt"
        service._log.close()

        sink_broker.start()
        forecasts = Forecasts(sink_broker.port, "dead-sub")
        service = ServiceProcess(config)
        service.wait_running()
        wait_for(lambda: set(sent) <= set(forecasts.keys), 120, interval=0.2,
                 what="every sample forecast once the sink's broker is up")
        wait_for(lambda: service.counters().get("samples", 0) + first["samples"] == len(sent)
                 and service.counters().get("unacknowledged_batches") == 0, 60, what="everything settled")
        second = service.counters()
        assert service.stop() == 0
        # what the first run processed was never acknowledged: the source broker sent it again (each stream's
        # last sample is a duplicate of its clock, the earlier ones are out of order)
        assert second["rejected"]["duplicate"] + second["rejected"]["out_of_order"] == first["samples"]
        assert second["wal"]["reemitted"] >= first["samples"]  # its forecasts came from the snapshot / log
        assert set(forecasts.keys) == set(sent)
    finally:
        tear_down(service, publisher, forecasts, brokers=[source, sink_broker])


def test_tcp_input_waits_in_the_socket_while_the_sink_is_down_and_is_acknowledged_once_delivered(
        fixture_bundles, tmp_path):
    """TCP with `ack = true` into an MQTT sink whose broker is not up yet: the input pauses, the selector
    thread stops reading (the queue is full, the rest waits in the kernel's buffers) and no line is
    acknowledged; once the broker is up every line is acknowledged and every forecast was PUBACKed."""
    import socket
    import threading

    _, bundle = fixture_bundles["gru"]
    sink_broker = Mosquitto(tmp_path / "sink-broker", port=free_port(), durable=False)
    lines = [f"p{k % 10},{100.0 + (k // 10) * 0.02},{sensor_value(k % 10, k // 10)[0]},"
             f"{sensor_value(k % 10, k // 10)[1]}\n".encode() for k in range(3000)]
    config = write_config(
        tmp_path, bundle, "[sources.tcp]\nport = 0\nack = true\n",
        f'[sinks.mqtt]\nport = {sink_broker.port}\nclient_id = "tcp-out"\nmax_queued = 50\n',
        "[streams]\nmax_streams = 10\n[input]\nqueue_size = 100\nstall_timeout_s = 0\n")
    service = ServiceProcess(config)
    acks: list[int] = []
    try:
        port = service.wait_running()["sources"]["tcp"]["port"]
        conn = socket.create_connection(("127.0.0.1", port))

        def read_acks():
            buffer = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
                *whole, buffer = buffer.split(b"\n")
                acks.extend(int(line.split()[1]) for line in whole)
        threading.Thread(target=read_acks, daemon=True).start()
        sender = threading.Thread(target=conn.sendall, args=(b"".join(lines),), daemon=True)
        sender.start()
        def paused_with_nothing_acknowledged():
            assert not acks, f"acknowledged {len(acks)} lines whose forecasts no broker has"
            status = service.status() or {}
            return status.get("backpressure", {}).get("paused") and status["queue"] == 100
        wait_for(paused_with_nothing_acknowledged, 60, what="the input paused with the queue full")
        assert not acks, f"acknowledged {len(acks)} lines whose forecasts no broker has"
        assert service.counters()["samples"] < len(lines)  # the rest waits unread
        sink_broker.start()
        wait_for(lambda: len(acks) == len(lines), 120, interval=0.2, what="every line acknowledged")
        sender.join(30)
        assert acks == list(range(1, len(lines) + 1))
        counters = wait_for(lambda: (c := service.counters()).get("samples") == len(lines) and c, 30,
                            what="status.json caught up with the samples")  # it is rewritten every second
        assert counters["sink_dropped"] == 0 and sum(counters["rejected"].values()) == 0
        assert counters["sinks"]["mqtt"]["acknowledged"] >= len(lines)
        conn.close()
        assert service.stop() == 0
    finally:
        if service.proc.poll() is None:
            service.kill()
        sink_broker.stop()
