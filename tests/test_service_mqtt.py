"""The edge service through a real Mosquitto broker: malformed floods, load, a broker restart."""
from __future__ import annotations

import json
import socket
import time
from operator import itemgetter

import pytest

from pipeline.broker import Mosquitto, mqtt_client
from pipeline.loadgen import run_load
from service_helpers import OrderedPublisher, ServiceProcess, SlowHandshakeProxy, read_jsonl, subscribe_and_wait, wait_for, write_config
from traffic import mixed_traffic, sensor_value


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    # durable=False: these tests measure load and malformed floods, not a broker kill (test_service_loss),
    # and a save after every change would rewrite the flood's whole backlog at each loop turn
    mosquitto = Mosquitto(tmp_path_factory.mktemp("mosquitto"), durable=False).start()
    yield mosquitto
    mosquitto.stop()


def _mqtt_service(tmp_path, bundle, port: int, client_id: str, extra: str = "") -> ServiceProcess:
    config = write_config(tmp_path, bundle,
                          f'[sources.mqtt]\nport = {port}\ntopic = "sensors/+"\nclient_id = "{client_id}"\n',
                          '[sinks.jsonl]\npath = "out.jsonl"\n', extra)
    service = ServiceProcess(config)
    service.wait_running()
    wait_for(lambda: (service.status() or {}).get("sources", {}).get("mqtt", {}).get("connected"), 60,
             what="the service's MQTT source connected")
    wait_for(lambda: service.log_events("mqtt_subscribed"), 30, what="the broker's SUBACK to the service")
    return service


def test_ten_thousand_malformed_messages_over_mqtt(fixture_bundles, tmp_path, broker):
    _, bundle = fixture_bundles["lstm"]
    traffic = mixed_traffic(streams=10, per_stream=300, bad=10500, seed=2, topic_ids=True)
    service = _mqtt_service(tmp_path, bundle, broker.port, "flood-in", "[streams]\nmax_streams = 10\n")
    publisher = OrderedPublisher.connect(broker.port, "flood-pub")
    for stream_id, payload in traffic.messages:
        publisher.publish(f"sensors/{stream_id}", payload)
    wait_for(lambda: len(publisher.acked) == len(traffic.messages), 120, what="every message acknowledged")
    publisher.close()
    expected_total = sum(traffic.expected.values())
    wait_for(lambda: service.counters().get("samples") == len(traffic.valid)
             and sum(service.counters()["rejected"].values()) == expected_total, 120, what="all messages counted")
    assert service.proc.poll() is None
    assert service.stop() == 0
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert {k: v for k, v in status["counters"]["rejected"].items() if v} == dict(traffic.expected)
    records, torn = read_jsonl(tmp_path / "out.jsonl")
    seen = [(r["id"], r["t"]) for r in records]
    assert torn == 0 and len(seen) == len(set(seen)) and set(seen) == traffic.valid
    # no reference cycle per message for the collector to find (paho's topic matcher made 5 objects a message:
    # ~67,000 here); what is left is status.json's writes and the like
    print("cyclic garbage collected:", status["gc"]["collected"], "for", len(traffic.messages), "messages")
    assert sum(status["gc"]["collected"]) < len(traffic.messages) / 10, status["gc"]


def test_a_message_may_carry_a_batch_of_its_streams_samples(fixture_bundles, tmp_path, broker):
    """One sample per payload line, each checked alone; the message is acknowledged once all are processed:
    a restarted service gets nothing of it again (a redelivered sample would count as a duplicate)."""
    _, bundle = fixture_bundles["lstm"]
    lines = [f"{k},{v[0]},{v[1]}" for k, v in ((k, sensor_value(0, k)) for k in range(20))]
    lines[7] = "soon,20.0,4.0"  # a bad timestamp in the middle: rejected alone, the rest still steps
    lines.append("20," + ",".join(["1.0"] * 3000))  # longer than max_line_bytes: that line only is oversized
    service = _mqtt_service(tmp_path, bundle, broker.port, "batch-in")
    publisher = OrderedPublisher.connect(broker.port, "batch-pub")
    publisher.publish("sensors/b1", ("\n".join(lines) + "\n").encode())
    publisher.publish("sensors/b2", b"0,20.0,4.0\n\n1,20.1,4.0")  # a blank line between is no sample
    publisher.publish("sensors/b3", b"\n" * 5000)  # more lines than MQTT_BATCH_LINES: one rejection, no parse each
    wait_for(lambda: service.counters().get("samples") == 21 and sum(service.counters()["rejected"].values()) == 3,
             60, what="the batches' 21 good samples and 3 rejections")
    rejected = {k: v for k, v in service.counters()["rejected"].items() if v}
    assert rejected == {"bad_timestamp": 1, "oversized": 2}, rejected
    assert any("5001 lines (at most 1000 lines" in e.get("detail", "") for e in service.log_events("rejected"))
    assert service.stop() == 0
    records, torn = read_jsonl(tmp_path / "out.jsonl")
    assert torn == 0 and [r["t"] for r in records if r["id"] == "b1"] == [k for k in range(20) if k != 7]
    assert [r["t"] for r in records if r["id"] == "b2"] == [0.0, 1.0]

    again = ServiceProcess(tmp_path / "edge.toml")  # the same client id and state: the broker's session resumes
    again.wait_running()
    wait_for(lambda: again.log_events("mqtt_subscribed"), 30, what="the SUBACK after the restart")
    publisher.publish("sensors/b1", b"21,20.0,4.0")  # after anything the broker might still redeliver
    wait_for(lambda: again.counters().get("samples") == 1, 60, what="the sample after the restart")
    assert not any(again.counters()["rejected"].values()), again.counters()["rejected"]
    assert again.stop() == 0
    publisher.close()


@pytest.mark.slow
def test_end_to_end_load_through_mosquitto_loses_nothing(fixture_bundles, broker, tmp_path):
    """The benchmark's path, shortened: 100 sensors x 50 Hz for 3 s (15,000 samples) at QoS 1."""
    _, bundle = fixture_bundles["lstm"]
    result = run_load(bundle, sensors=100, rate_hz=50, duration_s=3, broker_port=broker.port, workdir=tmp_path,
                      drain_timeout_s=120)
    assert result["sent"] == 15000 and result["acknowledged"] == 15000
    assert result["forecasts"] == 15000 and result["lost"] == 0 and result["duplicates"] == 0
    assert result["taken_in"] == 15000 and result["backlog_at_end"] == 0
    assert result["service"]["counters"]["samples"] == 15000
    assert sum(result["service"]["counters"]["rejected"].values()) == 0
    print(f"\nload: {json.dumps({k: result[k] for k in ('publish_rate_per_s', 'latency_ms')})}")


@pytest.mark.slow
def test_broker_restarted_mid_stream_nothing_acknowledged_is_lost(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["gru"]
    mosquitto = Mosquitto(tmp_path / "broker").start()
    try:
        service = _mqtt_service(tmp_path, bundle, mosquitto.port, "restart-in")
        publisher = OrderedPublisher.connect(mosquitto.port, "restart-pub")
        sent = []
        start = time.monotonic()
        restarted = False
        for k in range(150):  # 20 sensors x 25 Hz x 6 s
            if not restarted and time.monotonic() - start > 2.0:
                mosquitto.stop()  # SIGTERM: the broker saves sessions and in-flight messages
                wait_for(lambda: service.log_events("mqtt_disconnected"), 60, what="the service saw the broker go")
                mosquitto.start()
                restarted = True
            for s in range(20):
                t = 100.0 + k * 0.04
                publisher.publish(f"sensors/r{s}", f"{t},{sensor_value(s, k)[0]},{sensor_value(s, k)[1]}".encode(),
                                  key=(f"r{s}", round(t, 6)))
                sent.append((f"r{s}", round(t, 6)))
            time.sleep(0.04)  # pacing only (25 Hz per sensor): what is asserted does not depend on it
        assert restarted
        publisher.flush()
        wait_for(lambda: len(publisher.acked) == len(sent), 60, what="the publisher's messages acknowledged")
        acked = set(publisher.acked)

        def processed():
            return {(r["id"], round(r["t"], 6)) for r in read_jsonl(tmp_path / "out.jsonl")[0]}
        try:
            wait_for(lambda: acked <= processed(), 60, what="every acknowledged sample processed")
        except AssertionError as timed_out:
            missing = sorted(acked - processed(), key=lambda key: (key[1], key[0]))
            rejected = {reason: n for reason, n in service.counters().get("rejected", {}).items() if n}
            raise AssertionError(f"{timed_out}: {len(missing)} missing, first {missing[:5]}, last {missing[-3:]};"
                                 f" the service rejected {rejected}") from None
        publisher.close()
        assert service.stop() == 0
        records, _ = read_jsonl(tmp_path / "out.jsonl")
        keys = [(r["id"], round(r["t"], 6)) for r in records]
        assert len(keys) == len(set(keys))  # redeliveries were dropped as duplicates, never stepped twice
        assert set(keys) == set(sent)
        connects = service.log_events("mqtt_connected")
        assert len([c for c in connects if "source" in c]) >= 2  # connected, lost, reconnected
        assert any(c.get("session_present") for c in connects[1:] if "source" in c)  # the broker kept our session
        assert service.log_events("mqtt_disconnected")
        steps = {}
        for r in records:  # each stream's steps run 1..150 without a reset
            assert r["step"] == steps.get(r["id"], 0) + 1
            steps[r["id"]] = r["step"]
    finally:
        mosquitto.stop()


def test_predictions_and_anomaly_events_are_published_at_qos1(fixture_bundles, tmp_path, broker):
    """A bundle with an anomaly section: one spike gives one start and one end, on edge/<id>/anomaly."""
    import shutil
    import socket

    _, bundle = fixture_bundles["lstm"]
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["anomaly"] = {"residual_std": [0.05], "threshold": 8.0, "clear_threshold": 4.0, "clear_steps": 3}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    received, subscriber = [], mqtt_client("anomaly-sub", broker.port)
    subscriber.on_message = lambda c, u, m: received.append((m.topic, json.loads(m.payload), m.qos))
    subscribe_and_wait(subscriber, "edge/+/+")
    config = write_config(tmp_path, copy, "[sources.tcp]\nport = 0\n",
                          f'[sinks.jsonl]\npath = "out.jsonl"\n[sinks.mqtt]\nport = {broker.port}\n'
                          'client_id = "anomaly-out"\n', "[streams]\nwarmup_steps = 16\n")
    service = ServiceProcess(config)
    port = service.wait_running()["sources"]["tcp"]["port"]
    values = [sensor_value(0, k) for k in range(120)]
    values[80] = [values[80][0] + 5.0, values[80][1]]  # a 5 degC spike: 100 residual stds
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"".join(f"a1,{k},{v[0]},{v[1]}\n".encode() for k, v in enumerate(values)))
    wait_for(lambda: sum(1 for t, _, _ in received if t.endswith("/prediction")) == 120, 30,
             what="120 predictions published")
    assert service.stop() == 0
    events = [(r["event"], r["t"]) for t, r, _ in received if t == "edge/a1/anomaly"]
    assert [e for e, _ in events] == ["start", "end"] and events[0][1] == 80.0
    assert all(qos == 1 for _, _, qos in received)
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["counters"]["anomalies"] == 1
    records, _ = read_jsonl(tmp_path / "out.jsonl")
    scored = [r for r in records if r["score"] is not None]
    assert scored and all(r["warm"] for r in scored) and min(r["step"] for r in scored) == 17
    subscriber.disconnect()
    subscriber.loop_stop()


def test_a_broker_that_is_not_there_yet_is_waited_for(fixture_bundles, tmp_path):
    """Started before its broker (a Pi booting faster than the broker host): it keeps retrying, then serves."""
    from pipeline.broker import free_port

    _, bundle = fixture_bundles["gru"]
    mosquitto = Mosquitto(tmp_path / "broker", port=free_port())
    config = write_config(tmp_path, bundle,
                          f'[sources.mqtt]\nport = {mosquitto.port}\nclient_id = "late-in"\n',
                          f'[sinks.jsonl]\npath = "out.jsonl"\n[sinks.mqtt]\nport = {mosquitto.port}\n'
                          'client_id = "late-out"\n')
    service = ServiceProcess(config)
    try:
        service.wait_running()
        wait_for(lambda: service.log_events("mqtt_unreachable"), 60, what="a logged connection failure")
        assert service.proc.poll() is None
        mosquitto.start()
        wait_for(lambda: service.log_events("mqtt_subscribed"), 30, what="subscribed once the broker is up")
        received, subscriber = [], mqtt_client("late-sub", mosquitto.port)
        subscriber.on_message = lambda c, u, m: received.append(m.topic)
        subscribe_and_wait(subscriber, "edge/+/prediction")
        publisher = OrderedPublisher.connect(mosquitto.port, "late-pub")
        for k in range(20):
            publisher.publish("sensors/late", f"{k},{20 + k / 10},4".encode())
        wait_for(lambda: len(received) == 20, 30, what="20 forecasts published back")
        publisher.close()
        subscriber.disconnect()
        subscriber.loop_stop()
        assert service.stop() == 0
    finally:
        if service.proc.poll() is None:
            service.kill()
        mosquitto.stop()


def test_forecasts_reach_subscribers_in_order_when_the_sink_reconnects_over_a_slow_link(fixture_bundles, tmp_path):
    """The MQTT sink cut off mid-stream, its reconnection's CONNACK held 2 s while samples keep coming.

    paho sends a publish made in that window at once, ahead of the forecasts it resends after the CONNACK:
    a subscriber saw t=101.0 after t=103.82 on the code before the sink waited for its resends. Per stream,
    the first arrival of each forecast must come in t order, and every sample must be forecast."""
    _, bundle = fixture_bundles["gru"]
    mosquitto = Mosquitto(tmp_path / "broker", durable=False).start()
    proxy = SlowHandshakeProxy(mosquitto.port, delay_s=2.0)
    subscriber = service = None
    try:
        arrivals: list[tuple[str, float]] = []
        subscriber = mqtt_client("order-sub", mosquitto.port)
        subscriber.on_message = lambda c, u, m: arrivals.append(itemgetter("id", "t")(json.loads(m.payload)))
        subscribe_and_wait(subscriber, "edge/+/prediction")
        config = write_config(tmp_path, bundle, "[sources.tcp]\nport = 0\n",
                              f'[sinks.mqtt]\nport = {proxy.port}\nclient_id = "order-out"\n')
        service = ServiceProcess(config)
        port = service.wait_running()["sources"]["tcp"]["port"]
        wait_for(lambda: service.log_events("mqtt_connected"), 30, what="the sink connected through the proxy")
        sent, sent_at = [], []
        with socket.create_connection(("127.0.0.1", port)) as conn:
            for k in range(200):  # 5 streams x 50 Hz x 4 s
                if k == 50:
                    proxy.cut_off()
                t = round(100.0 + k * 0.02, 2)
                conn.sendall(b"".join(f"o{s},{t},{sensor_value(s, k)[0]},{sensor_value(s, k)[1]}\n".encode()
                                      for s in range(5)))
                sent += [(f"o{s}", t) for s in range(5)]
                sent_at.append(time.monotonic())
                time.sleep(0.02)  # pacing only (50 Hz per stream): what is asserted does not depend on it
            wait_for(lambda: set(arrivals) >= set(sent), 60, what="a forecast for every sample at the subscriber")
        assert proxy.held, "the sink never reconnected through the slow link: the test tested nothing"
        held_from, held_until = proxy.held[0]
        assert any(held_from <= at <= held_until for at in sent_at), "no sample came while the CONNACK was held"
        first_arrivals: dict[str, list[float]] = {}
        seen = set()
        for key in arrivals:
            if key not in seen:
                seen.add(key)
                first_arrivals.setdefault(key[0], []).append(key[1])
        for stream, times in first_arrivals.items():
            back = [(a, b) for a, b in zip(times, times[1:]) if b <= a]
            assert not back, f"stream {stream}: {len(back)} forecasts came before older ones, first t={back[0][1]} after t={back[0][0]}"
        assert service.stop() == 0
    finally:
        if subscriber is not None:
            subscriber.disconnect()
            subscriber.loop_stop()
        if service is not None and service.proc.poll() is None:
            service.kill()
        proxy.close()
        mosquitto.stop()
