"""Load through the real path: sensors -> Mosquitto -> edge service -> Mosquitto -> a subscriber.

`run_load(bundle, sensors=100, rate_hz=50, duration_s=60)` starts a broker
(unless given one), the service as its own process (`python -m edge_runtime
serve`, MQTT in and out at QoS 1), a paced publisher of sensor-like samples
and a subscriber of every forecast, and returns:

- sent / acknowledged (by the broker, to the publisher) / forecasts received /
  taken in (the service's own count) / lost (taken in, no forecast) / the
  backlog left at the broker when the drain ended (the service fell behind:
  late, not lost) / duplicates,
- sample-to-prediction latency p50/p99/max in ms: the sample carries its
  send time (time.time()) as its timestamp and the forecast echoes it, so
  latency = receive time - timestamp, both clocks on this machine; it
  includes two broker hops and the subscriber's own lag,
- the service's RSS (VmRSS from /proc) the first time its sample counter
  passed each mark (default 100,000 and 1,000,000; 100 sensors x 50 Hz reach
  1,000,000 after 200 s, so pass duration_s=200 for both marks).

    python -m pipeline loadgen artifacts/temperature-lstm --duration 200   # prints the result as JSON
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from pipeline.broker import Mosquitto, mqtt_client

ROOT = Path(__file__).resolve().parents[1]
RSS_MARKS = (100_000, 1_000_000)
# Keeping up is a bounded delay, not a drained broker: a service below the sensors' rate still forecasts every
# sample once the publisher stops, minutes late. One that keeps pace forecasts within a few batch turns and two
# broker hops; one that falls behind has a delay that grows with the run. 1 s is 50 samples of a 50 Hz sensor.
KEEP_UP_P99_MS = 1_000.0
# the publisher shares the machine: if it offered less than this share of the rate, the rate was not tested
KEEP_UP_OFFERED = 0.95


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sensor_values(manifest: dict, sensors: int):
    """sensor index, step -> one raw sample per channel: mean + 0.5 std * a slow sine, per sensor phase."""
    mean = np.asarray(manifest["normalization"]["mean"], np.float64)
    std = np.asarray(manifest["normalization"]["std"], np.float64)
    phases = np.linspace(0, 2 * math.pi, sensors, endpoint=False)

    def values(sensor: int, k: int) -> list[float]:
        return [round(v, 5) for v in mean + 0.5 * std * np.sin(k / 50.0 + phases[sensor] + np.arange(len(mean)))]
    return values


def _service_config(folder: Path, bundle: Path, port: int, sensors: int, jsonl: bool) -> Path:
    sink = '[sinks.jsonl]\npath = "predictions.jsonl"\n' if jsonl else ""
    path = folder / "edge.toml"
    path.write_text(
        f'bundle = "{Path(bundle).resolve()}"\nstate_dir = "state"\n'
        f"[streams]\nmax_streams = {max(sensors, 1)}\n[snapshot]\ninterval_s = 10.0\n"
        f'[sources.mqtt]\nport = {port}\ntopic = "sensors/+"\nclient_id = "edge-load-in"\n'
        f'[sinks.mqtt]\nport = {port}\nprefix = "edge"\nclient_id = "edge-load-out"\n{sink}')
    return path


class ForecastTally:
    """Forecasts counted once per (stream, t), duplicates apart, and each one's latency (seen - t, seconds)
    into a preallocated array; the sample's t is its send time. Shared with pipeline/ceiling.py."""

    def __init__(self, capacity: int):
        self.latency_s = np.zeros(capacity, np.float64)
        self.count = self.duplicates = 0
        self.seen: set = set()

    def add(self, record: dict, now: float) -> None:
        key = (record["id"], record["t"])
        if key in self.seen:
            self.duplicates += 1
            return
        self.seen.add(key)
        if self.count < len(self.latency_s):
            self.latency_s[self.count] = now - record["t"]
        self.count += 1


class _Subscriber(ForecastTally):
    """Counts forecasts per (sensor, t) and records latency into a preallocated array."""

    def __init__(self, port: int, capacity: int):
        super().__init__(capacity)
        self.lock = threading.Lock()
        self.client = mqtt_client("edge-load-sub", port)
        self.client.on_message = self._message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.subscribe("edge/+/prediction", qos=1)
        if not subscribed.wait(10):
            raise RuntimeError("the load subscriber's SUBSCRIBE was not acknowledged within 10 s")

    def _message(self, client, userdata, message) -> None:
        now = time.time()
        record = json.loads(message.payload)
        with self.lock:
            self.add(record, now)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait_service_ready(proc: subprocess.Popen, status_path: Path, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}")
        try:
            status = json.loads(status_path.read_text())
            if status["pid"] == proc.pid and status["state"] == "running" and status["sources"]["mqtt"]["connected"]:
                return status
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the service was not running and subscribed within {timeout}s")


def run_load(bundle: str | Path, sensors: int = 100, rate_hz: float = 50.0, duration_s: float = 60.0,
             rss_marks: tuple[int, ...] = RSS_MARKS, workdir: str | Path | None = None,
             broker_port: int | None = None, drain_timeout_s: float | None = None, jsonl: bool = False,
             progress: bool = False) -> dict:
    """Run the full path under load; see the module docstring for what comes back."""
    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    values = _sensor_values(manifest, sensors)
    ticks = int(round(duration_s * rate_hz))
    with tempfile.TemporaryDirectory(prefix="edge-load-") as tmp:
        folder = Path(workdir) if workdir else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        # durable=False: a save after every change rewrites the whole backlog each loop turn, which this
        # throughput measurement would measure instead of the service (the loss tests use a durable broker)
        broker = None if broker_port else Mosquitto(folder / "broker", durable=False).start()
        port = broker_port or broker.port
        service = log = subscriber = publisher = None
        try:
            config = _service_config(folder, Path(bundle), port, sensors, jsonl)
            log = open(folder / "service.log", "wb")
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            service = subprocess.Popen([sys.executable, "-m", "edge_runtime", "serve", "--config", str(config),
                                        "--fresh"], stdout=subprocess.DEVNULL, stderr=log, env=env)
            status_path = folder / "state" / "status.json"
            _wait_service_ready(service, status_path)
            rss_start_kb, cpu_start_s = _rss_kb(service.pid), _cpu_s(service.pid)
            subscriber = _Subscriber(port, sensors * ticks)
            acked = [0]
            # every publish goes out at once, as from 100 separate sensors: with paho's inflight cap (1000) the rest
            # wait in its queue, which it rescans at every PUBACK, and this one process became the bottleneck
            publisher = mqtt_client("edge-load-pub", port, max_inflight=0)
            publisher.on_publish = lambda *a: acked.__setitem__(0, acked[0] + 1)
            rss: dict[int, dict] = {}
            sampling = threading.Event()
            sampler = threading.Thread(target=_sample_rss, args=(service.pid, status_path, rss_marks, rss, sampling),
                                       daemon=True)
            sampler.start()
            start = time.time()
            sent = 0
            for k in range(ticks):
                delay = start + k / rate_hz - time.time()
                if delay > 0:
                    time.sleep(delay)
                for sensor in range(sensors):
                    t = time.time()
                    payload = ",".join(str(v) for v in [t, *values(sensor, k)])
                    publisher.publish(f"sensors/s{sensor}", payload, qos=1)
                    sent += 1
                if progress and k % int(rate_hz * 10) == 0:
                    print(f"  t={time.time() - start:5.1f}s sent {sent} forecasts {subscriber.count}", file=sys.stderr)
            publish_s = time.time() - start
            # a machine that falls behind drains its backlog after the publisher stops: late is not lost
            deadline = time.monotonic() + (drain_timeout_s if drain_timeout_s is not None else max(60.0, duration_s))
            while subscriber.count < sent and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.5)  # status.json is rewritten every second: let the sampler see the last count
            sampling.set()
            sampler.join()
            rss_end_kb, cpu_end_s = _rss_kb(service.pid), _cpu_s(service.pid)
            loadavg = os.getloadavg()
            service.send_signal(signal.SIGTERM)  # its final status.json has the final counters
            service.wait(60)
            status = json.loads(status_path.read_text())
            latency_ms = subscriber.latency_s[:min(subscriber.count, len(subscriber.latency_s))] * 1e3
            result = {
                "sensors": sensors, "rate_hz": rate_hz, "duration_s": duration_s,
                "sent": sent, "acknowledged": acked[0], "forecasts": subscriber.count,
                # taken in by the service (its own count) but no forecast reached the subscriber: a loss
                "taken_in": status["counters"]["samples"],
                "lost": max(0, status["counters"]["samples"] - subscriber.count),
                # never taken in when the drain ended: the service fell behind, the broker still holds them
                # unacknowledged for its next start (late, not lost)
                "backlog_at_end": max(0, sent - status["counters"]["samples"]),
                "duplicates": subscriber.duplicates,
                "publish_rate_per_s": round(sent / publish_s, 1),
                "latency_ms": {"p50": round(float(np.percentile(latency_ms, 50)), 2) if len(latency_ms) else None,
                               "p99": round(float(np.percentile(latency_ms, 99)), 2) if len(latency_ms) else None,
                               "max": round(float(latency_ms.max()), 2) if len(latency_ms) else None},
                "rss_kb_at_samples": {str(mark): rss.get(mark) for mark in rss_marks},
                "rss_kb": {"ready": rss_start_kb, "end": rss_end_kb},
                "service_cpu_s": round(cpu_end_s - cpu_start_s, 1) if None not in (cpu_start_s, cpu_end_s) else None,
                "wall_s": round(time.time() - start, 1), "load_average_at_end": [round(v, 2) for v in loadavg],
                "service": {"counters": status["counters"], "latency_us": status["latency_us"],
                            "e2e_latency_us": status.get("e2e_latency_us"), "bundle": status["bundle"]},
            }
            marks = [rss[m]["rss_kb"] for m in rss_marks if m in rss]
            if len(marks) >= 2:
                result["rss_growth_pct"] = round(100.0 * (marks[-1] - marks[0]) / marks[0], 2)
            return result
        finally:
            for client in (publisher, subscriber):
                if client is not None:
                    client.close() if isinstance(client, _Subscriber) else (client.disconnect(), client.loop_stop())
            if service is not None and service.poll() is None:
                service.send_signal(signal.SIGTERM)
                service.wait(60)
            if log is not None:
                log.close()
            if broker is not None:
                broker.stop()


def _sample_rss(pid: int, status_path: Path, marks: tuple[int, ...], out: dict, done: threading.Event) -> None:
    """Record VmRSS the first time the service's sample counter passes each mark."""
    pending = sorted(marks)
    while pending:
        finished = done.is_set()  # one more reading after the caller says stop
        try:
            samples = json.loads(status_path.read_text())["counters"]["samples"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            samples = 0
        while pending and samples >= pending[0]:
            out[pending.pop(0)] = {"samples": samples, "rss_kb": _rss_kb(pid)}
        if finished:
            return
        done.wait(0.2)


def pool_throughput(bundle: str | Path, stream_counts=(1, 8, 64, 256), steps: int = 200, backend: str | None = None,
                    batched: bool | None = None) -> list[dict]:
    """Samples per second through StreamPool.step_many with every stream stepping at once.

    Runs in this process: call it from a process without TensorFlow when backend is
    tflite_runtime (see DESIGN-NOTES: tflite-runtime 2.14 breaks next to TensorFlow).
    """
    import edge_runtime
    from edge_runtime.pool import StreamPool

    model = edge_runtime.load(bundle, backend=backend)
    values = _sensor_values(json.loads((Path(bundle) / "manifest.json").read_text()), max(stream_counts))
    rows = []
    for count in stream_counts:
        pool = StreamPool(model, max_streams=count, batched=batched)
        batches = [{f"s{i}": values(i, k) for i in range(count)} for k in range(steps)]
        for batch in batches[:10]:  # warm-up (opens the bucket's interpreter)
            pool.step_many(batch)
        start = time.perf_counter()
        for batch in batches:
            pool.step_many(batch)
        elapsed = time.perf_counter() - start
        rows.append({"streams": count, "batched": pool.batched is not None, "backend": model.backend,
                     "samples_per_s": round(count * steps / elapsed), "us_per_sample": round(elapsed / (count * steps) * 1e6, 2)})
    return rows


def service_report(bundle: str | Path, reports: str | Path, duration_s: float = 200.0) -> Path:
    """`python -m pipeline bench --service-load BUNDLE`: load + throughput -> reports/service-load.md (+ .json).

    The throughput part runs in its own process: the caller may have TensorFlow
    loaded, next to which tflite-runtime 2.14 cannot open models.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "pipeline", "loadgen", str(bundle), "--throughput"],
                          capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"throughput run failed: {done.stderr[-2000:]}")
    throughput = json.loads(done.stdout.strip().splitlines()[-1])
    load = run_load(bundle, duration_s=duration_s, progress=True)
    reports = Path(reports)
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "service-load.json").write_text(json.dumps({"load": load, "throughput": throughput}, indent=1))
    lines = [f"# Edge service under load: {Path(bundle).name}", ""] + load_table(load)
    lines += ["", "## StreamPool.step_many throughput", "", "| streams | batched | us per sample | samples/s |",
              "|---|---|---|---|"]
    lines += [f"| {r['streams']} | {'yes' if r['batched'] else 'no'} | {r['us_per_sample']} | {r['samples_per_s']:,} |"
              for r in throughput]
    path = reports / "service-load.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def keeps_up(load: dict) -> tuple[bool, str]:
    """Whether the service kept pace with the sensors, and the figures that say so: the publisher offered the
    rate, nothing was left at the broker, and the p99 sample-to-forecast delay stayed under KEEP_UP_P99_MS."""
    target = load["sensors"] * load["rate_hz"]
    offered, backlog = load["publish_rate_per_s"], load.get("backlog_at_end", 0)
    p50, p99 = load["latency_ms"]["p50"], load["latency_ms"]["p99"]
    held = (backlog == 0 and p99 is not None and p99 < KEEP_UP_P99_MS and offered >= KEEP_UP_OFFERED * target)
    delays = "no forecast" if p99 is None else f"{p50 / 1000:,.2f} / {p99 / 1000:,.2f} s"
    figure = (f"sample-to-forecast p50 / p99 {delays} (under {KEEP_UP_P99_MS / 1000:g} s to keep up); "
              f"{load['forecasts']:,} of {load['sent']:,} forecast, {backlog:,} left at the broker; "
              f"the publisher offered {offered:,.0f} of {target:,.0f} samples/s")
    cpu_s, taken = load.get("service_cpu_s"), load.get("taken_in")
    if cpu_s and taken:
        figure += f"; the service's CPU {1e6 * cpu_s / taken:,.0f} us a sample (one core: {taken / cpu_s:,.0f}/s)"
    return held, figure


def load_table(load: dict) -> list[str]:
    """The load run's figures as markdown lines (service-load.md and make bench's bench.md)."""
    marks = load["rss_kb_at_samples"]
    lines = [f"{load['sensors']} sensors x {load['rate_hz']:g} Hz for {load['duration_s']:g} s through Mosquitto "
             f"at QoS 1 (publisher -> broker -> service -> broker -> subscriber, all on this machine).", "",
             "| figure | value |", "|---|---|",
             f"| samples sent / acknowledged / forecasts received | {load['sent']} / {load['acknowledged']} / "
             f"{load['forecasts']} |",
             f"| taken in by the service | {load.get('taken_in', '-')} |",
             f"| lost: taken in, no forecast (PASS when 0) | {load['lost']} ({'PASS' if load['lost'] == 0 else 'FAIL'}) |",
             f"| left at the broker when the drain ended (late, not lost) | {load.get('backlog_at_end', '-')} |",
             "| keeps up: p99 sample-to-forecast under {:g} s, the rate offered, nothing left | {} |".format(
                 KEEP_UP_P99_MS / 1000, "PASS" if keeps_up(load)[0] else "FAIL"),
             f"| publish rate achieved | {load['publish_rate_per_s']}/s |",
             f"| sample-to-prediction latency p50 / p99 | {load['latency_ms']['p50']} / {load['latency_ms']['p99']} ms |",
             f"| service step latency p50 / p99 | {load['service']['latency_us']['p50']} / "
             f"{load['service']['latency_us']['p99']} us |"]
    if load.get("service_cpu_s") and load.get("taken_in"):
        lines.append(f"| service CPU a sample (user + system, every thread) | "
                     f"{1e6 * load['service_cpu_s'] / load['taken_in']:,.0f} us |")
    for mark, value in marks.items():
        lines.append(f"| RSS after {int(mark):,} samples | {value['rss_kb'] / 1024:.1f} MB |" if value else
                     f"| RSS after {int(mark):,} samples | not reached (run longer) |")
    if "rss_growth_pct" in load:
        verdict = "PASS" if abs(load["rss_growth_pct"]) <= 5 else "FAIL"
        lines.append(f"| RSS growth between the marks (flat within 5%) | {load['rss_growth_pct']}% ({verdict}) |")
    return lines


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m pipeline loadgen", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--sensors", type=int, default=100)
    p.add_argument("--rate", type=float, default=50.0, help="samples per second per sensor")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of publishing")
    p.add_argument("--throughput", action="store_true",
                   help="instead: StreamPool.step_many samples/s at 1/8/64/256 streams, batched and per-stream")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 8, 64, 256], help="stream counts for --throughput")
    args = p.parse_args(argv)
    if args.throughput:
        counts = tuple(args.streams)
        rows = pool_throughput(args.bundle, counts, batched=None) + pool_throughput(args.bundle, counts, batched=False)
        print(json.dumps(rows))
        return 0
    result = run_load(args.bundle, args.sensors, args.rate, args.duration, progress=True)
    print(json.dumps(result))
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
