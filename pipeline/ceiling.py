"""The edge service's ceiling on one core: samples/s over TCP, latency at 80% of it, and where the time goes.

    python -m pipeline service-ceiling artifacts/temperature-lstm [--quick] [--streams 64] [--pi-emu]

The service (`python -m edge_runtime serve`: TCP source with acknowledgements, JSON-lines sink, write-ahead
log and snapshots as in production) runs pinned to one core; this process, pinned to another, is every
sensor at once on one TCP connection and reads the sink's file as it grows. Per line format (CSV, JSON):

1. **ceiling**: lines go out as fast as the service takes them (TCP backpressure paces the sender). The
   ceiling is the forecasts written per second over the measured window (after a warm-up).
2. **at 80%**: the same, paced at 80% of that ceiling, in ticks of 10 ms. Sample-to-forecast latency is the
   time this process reads a forecast from the sink file minus the time it sent the sample (the forecast
   echoes the sample's timestamp, which is the send time); it includes the sink's write and this reader's
   polling (2 ms). After the sender stops, every line must be acknowledged by the service and forecast
   exactly once: `lost` counts the sent samples with no forecast, `duplicates` the forecasts seen twice.
3. **profile**: a third run at the ceiling under cProfile in every thread (pipeline/ceiling_profile.py),
   which slows the service; only its shares are reported, not its rate.

With --pi-emu (root), runs 1 and 2 again with the service on the emulated Pi (pipeline/ceiling_pi.py),
and the laptop/Pi ratio of the ceilings.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.loadgen import ForecastTally

ROOT = Path(__file__).resolve().parents[1]
TICK_S = 0.01  # the paced sender's tick
READ_POLL_S = 0.002  # the sink reader's wait when the file has nothing new (part of the measured latency)
FORMATS = ("csv", "json")
PI_WARMUP_S = 5.0  # the emulated Pi's warm-up at least (qemu-user translates each code path on its first run)


@dataclass
class CeilingPlan:
    streams: int = 64
    warmup_s: float = 5.0
    measure_s: float = 20.0
    paced_s: float = 20.0
    profile_s: float = 10.0
    drain_timeout_s: float = 60.0  # after the sender stops: the longest wait with no new forecast or ack


QUICK = CeilingPlan(streams=16, warmup_s=1.0, measure_s=3.0, paced_s=3.0, profile_s=2.0)


def _cores() -> tuple[int | None, int | None]:
    """(service core, load core): two different CPUs of this process's set, or None where there is one."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[-1], cpus[0]


def _service_config(folder: Path, bundle: str, streams: int) -> Path:
    path = folder / "edge.toml"
    path.write_text(
        f'bundle = "{bundle}"\nstate_dir = "state"\n'
        f"[streams]\nmax_streams = {streams}\n[snapshot]\ninterval_s = 10.0\n"
        "[sources.tcp]\nport = 0\nack = true\n"
        '[sinks.jsonl]\npath = "forecasts.jsonl"\nrotate_bytes = 0\n')
    return path


class Host:
    """Where the service runs: this machine, from this checkout (the laptop's figures)."""

    name = "laptop"
    start_timeout_s = 60.0

    def __init__(self, bundle: Path):
        self.bundle = Path(bundle).resolve()

    def folder(self, under: Path) -> Path:
        return under

    def bundle_path(self) -> str:
        return str(self.bundle)

    def launch(self, folder: Path, config: Path, core: int | None, profile_to: Path | None, log) -> subprocess.Popen:
        serve = ["serve", "--config", str(config), "--fresh"]
        cmd = [sys.executable, "-m", "pipeline.ceiling_profile", str(profile_to), "--", *serve] if profile_to \
            else [sys.executable, "-m", "edge_runtime", *serve]
        return subprocess.Popen(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=log,
                                env={**os.environ, "PYTHONPATH": str(ROOT)},
                                preexec_fn=(lambda: os.sched_setaffinity(0, {core})) if core is not None else None)


def _values(bundle: Path, streams: int):
    """(streams, C) base values and per-stream phases: mean + 0.5 std * a slow sine, inside every bound."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    mean = np.asarray(manifest["normalization"]["mean"], np.float64)  # (C,)
    std = np.asarray(manifest["normalization"]["std"], np.float64)  # (C,)
    phases = np.linspace(0, 2 * np.pi, streams, endpoint=False)[:, None]  # (S, 1)
    return mean, std, phases


class LineMaker:
    """The k-th sample of every stream as one block of lines, CSV or JSON, stamped with the send time."""

    def __init__(self, bundle: Path, streams: int, fmt: str):
        self.mean, self.std, self.phases = _values(bundle, streams)
        self.ids = [f"s{i}" for i in range(streams)]
        self.fmt = fmt

    def block(self, k: int, t: float) -> bytes:
        v = self.mean + 0.5 * self.std * np.sin(k / 50.0 + self.phases + np.arange(len(self.mean)))  # (S, C)
        if self.fmt == "csv":
            return "".join(f"{sid},{t!r},{','.join(f'{x:.5f}' for x in row)}\n"
                           for sid, row in zip(self.ids, v)).encode()
        return "".join(json.dumps({"id": sid, "t": t, "values": [round(x, 5) for x in row]}) + "\n"
                       for sid, row in zip(self.ids, v)).encode()


class SinkReader:
    """Follows the sink's JSON-lines file in a process of its own: per forecast, the latency (read time - its
    sample's t). A process, not a thread: parsing thousands of lines in the sender's process held its GIL and
    made the sender and the reader wait on each other, which the latency then charged to the service."""

    def __init__(self, path: Path, capacity: int):
        ctx = multiprocessing.get_context("fork")  # the parent has no other threads yet (AckReader starts later)
        self._count, self._stop = ctx.Value("q", 0, lock=False), ctx.Event()
        self._results, child_end = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=self._follow, args=(path, capacity, child_end), daemon=True)
        self.latency_s, self.duplicates = np.zeros(0), 0

    @property
    def count(self) -> int:
        return self._count.value

    def start(self) -> None:
        self._proc.start()

    def finish(self, timeout_s: float = 30.0) -> None:
        """Stop following; collect the latencies and the duplicates."""
        self._stop.set()
        if not self._results.poll(timeout_s):
            self._proc.kill()
            raise RuntimeError(f"the sink reader sent no results within {timeout_s:g} s "
                               f"(exit code {self._proc.exitcode})")
        self.latency_s, self.duplicates = self._results.recv()
        self._proc.join(timeout_s)

    def _follow(self, path: Path, capacity: int, results) -> None:
        tally = ForecastTally(capacity)
        while not path.exists() and not self._stop.is_set():
            self._stop.wait(READ_POLL_S)
        with open(path, "rb") as f:
            rest = b""
            while not self._stop.is_set():
                chunk = f.read(1 << 20)
                if not chunk:
                    self._stop.wait(READ_POLL_S)
                    continue
                now = time.time()
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    record = json.loads(line)
                    if "prediction" in record:  # not an anomaly event
                        tally.add(record, now)
                self._count.value = tally.count
        results.send((tally.latency_s[:min(tally.count, capacity)], tally.duplicates))


class AckReader(threading.Thread):
    """Reads 'ack <n>' lines: the highest n is how many of this connection's lines the service is done with."""

    def __init__(self, sock: socket.socket):
        super().__init__(daemon=True)
        self.sock, self.acked = sock, 0

    def run(self) -> None:
        rest = b""
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            if lines:
                self.acked = int(lines[-1].split()[1])


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Service:
    """The service as a process on its own core, on `where` (Host, or pipeline/ceiling_pi.PiGuest);
    `profile_to` runs it under pipeline/ceiling_profile.py."""

    def __init__(self, where, folder: Path, streams: int, core: int | None, profile_to: Path | None = None):
        folder = where.folder(folder)
        folder.mkdir(parents=True)
        config = _service_config(folder, where.bundle_path(), streams)
        self.log = open(folder / "service.log", "wb")
        self.proc = where.launch(folder, config, core, profile_to, self.log)
        self.status_path, self.sink_path = folder / "state" / "status.json", folder / "forecasts.jsonl"
        self.port = self._wait_listening(where.start_timeout_s)
        self.exe = os.readlink(f"/proc/{self.proc.pid}/exe")  # python, or under binfmt_misc the emulator
    def _wait_listening(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode}: {self.log.name}")
            try:
                status = json.loads(self.status_path.read_text())
                if status["pid"] == self.proc.pid and status["state"] == "running":
                    return status["sources"]["tcp"]["port"]
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.05)  # polling status.json, which the service rewrites every second
        raise RuntimeError(f"the service was not listening within {timeout_s:.0f} s: {self.log.name}")

    def stop(self) -> dict:
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()
        return json.loads(self.status_path.read_text())


def _run(where, folder: Path, plan: CeilingPlan, fmt: str, rate: float | None, seconds: float,
         cores, profile_to: Path | None = None) -> dict:
    """One run: `rate` samples/s (None: as fast as the service takes them) for warm-up + `seconds`."""
    service_core, load_core = cores
    service = Service(where, folder, plan.streams, service_core, profile_to)
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})
    maker = LineMaker(where.bundle, plan.streams, fmt)
    total = plan.warmup_s + seconds
    capacity = int((rate or 200_000) * total * 1.5) + plan.streams
    reader = SinkReader(service.sink_path, capacity)
    reader.start()
    sock = socket.create_connection(("127.0.0.1", service.port))
    acks = AckReader(sock)
    acks.start()
    start = time.time()
    sent = k = 0
    window = None  # (time, forecasts) when the warm-up ended
    try:
        while (now := time.time()) - start < total:
            if window is None and now - start >= plan.warmup_s:
                window, cpu_window = (now, reader.count), _cpu_s(service.proc.pid)
            if rate is not None:  # paced: the blocks due by now
                due = int((now - start) * rate / plan.streams)
                if k >= due:
                    time.sleep(TICK_S)  # the pacing tick, not a wait for an event
                    continue
            sock.sendall(maker.block(k, time.time()))  # blocks while the service is behind (backpressure)
            sent += plan.streams
            k += 1
        end, forecasts_at_end, cpu_end = time.time(), reader.count, _cpu_s(service.proc.pid)
        if window is None:
            cpu_window = 0.0
        deadline, seen = time.monotonic() + plan.drain_timeout_s, None
        while (acks.acked < sent or reader.count < sent) and time.monotonic() < deadline:
            if (now_seen := (acks.acked, reader.count)) != seen:  # still draining (a slow device's backlog)
                deadline, seen = time.monotonic() + plan.drain_timeout_s, now_seen
            time.sleep(0.01)  # polling the two readers' counts while the service drains
    finally:
        sock.close()
        status = service.stop()
        reader.finish()
    w_time, w_count = window or (start, 0)  # a sender blocked through the whole warm-up: count from the start
    measured = (forecasts_at_end - w_count) / (end - w_time)
    latency_ms = reader.latency_s * 1e3
    lat = latency_ms[w_count:forecasts_at_end] if forecasts_at_end > w_count else latency_ms
    return {
        "format": fmt, "paced_rate": rate, "seconds": round(end - w_time, 2), "sent": sent,
        "acknowledged": acks.acked, "forecasts": reader.count, "lost": sent - reader.count,
        "duplicates": reader.duplicates, "samples_per_s": measured,
        "samples_per_cpu_s": (forecasts_at_end - w_count) / max(cpu_end - cpu_window, 1e-9),
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "max_ms": float(lat.max()) if len(lat) else None,
        "service_exe": service.exe, "service_counters": {k: status["counters"].get(k) for k in ("samples", "rejected") if k in status["counters"]},
        **_collector(status.get("gc") or {}, cpu_end),
        "fsync": _fsyncs(status.get("counters") or {}),
    }


def _fsyncs(counters: dict) -> dict:
    """{file: status.json's timed fsyncs (count, seconds, longest_ms, over_10ms)} of the write-ahead log and the
    JSONL sink, over the run: the disk's part in the run's latency tail."""
    files = {"wal": (counters.get("wal") or {}).get("fsync"),
             **{name: stats.get("fsync") for name, stats in (counters.get("sinks") or {}).items()}}
    return {name: stats for name, stats in files.items() if stats}


def _collector(gc_status: dict, cpu_s: float) -> dict:
    """The service's time in the cyclic garbage collector over its life (status.json's gc), and its share of the
    CPU time the service had used when the sender stopped (start-up and drain make the share a little high)."""
    seconds = sum(gc_status.get("seconds", []))
    return {"gc_s": seconds, "gc_share": seconds / cpu_s if cpu_s > 0 else None,
            "gc_longest_ms": gc_status.get("longest_ms"), "gc_collections": gc_status.get("collections")}


FULL = CeilingPlan()


def measure(bundle: str | Path, plan: CeilingPlan = FULL, formats=FORMATS, progress: bool = True,
            pi_plan: CeilingPlan | None = None) -> dict:
    """Ceiling, 80% run and profile per format on this machine; with `pi_plan`, the ceiling and the 80% run
    on the emulated Pi too (pipeline/ceiling_pi.py), and each format's laptop/Pi ratio. See the docstring."""
    bundle = Path(bundle)

    def say(where: str, fmt: str, text: str) -> None:
        if progress:
            print(f"  service ceiling, {where}, {fmt}: {text}", file=sys.stderr, flush=True)

    cores = _cores()
    affinity = os.sched_getaffinity(0)
    results: dict = {"streams": plan.streams, "service_core": cores[0], "load_core": cores[1], "formats": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="edge-ceiling-") as tmp:
            host = Host(bundle)
            for fmt in formats:
                results["formats"][fmt] = _ceiling_and_80(host, Path(tmp) / fmt, plan, fmt, cores, say)
                say(host.name, fmt, "under cProfile")
                stats = Path(tmp) / f"{fmt}-profile.json"
                _run(host, Path(tmp) / f"{fmt}-profile", plan, fmt, None, plan.profile_s, cores, stats)
                results["formats"][fmt]["profile"] = json.loads(stats.read_text())
            if pi_plan is not None:
                from pipeline.ceiling_pi import PiGuest

                say("emulated Pi", "-", "unpacking the Pi's root file system and installing the release into it")
                pi = PiGuest(bundle, Path(tmp) / "pi")
                results["pi"] = {"streams": pi_plan.streams, "cpu": pi.cpu, "formats": {}, "ratio": {}}
                for fmt in formats:
                    got = results["pi"]["formats"][fmt] = _ceiling_and_80(pi, Path(tmp) / f"pi-{fmt}", pi_plan, fmt,
                                                                         cores, say)
                    results["pi"]["ratio"][fmt] = (results["formats"][fmt]["ceiling"]["samples_per_s"]
                                                   / max(got["ceiling"]["samples_per_s"], 1e-9))
    finally:
        os.sched_setaffinity(0, affinity)
    return results


def _ceiling_and_80(where, folder: Path, plan: CeilingPlan, fmt: str, cores, say) -> dict:
    say(where.name, fmt, f"at full speed for {plan.warmup_s + plan.measure_s:.0f} s")
    top = _run(where, folder / "top", plan, fmt, None, plan.measure_s, cores)
    rate = 0.8 * top["samples_per_s"]
    say(where.name, fmt, f"{top['samples_per_s']:,.0f} samples/s; paced at 80% ({rate:,.0f}/s) for "
        f"{plan.warmup_s + plan.paced_s:.0f} s")
    return {"ceiling": top, "at_80": _run(where, folder / "80", plan, fmt, rate, plan.paced_s, cores)}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _rows(formats: dict, head: str, third_column) -> list[str]:
    """A table's header and one row per format; `third_column(fmt, ceiling_run)` fills the column `head`."""
    lines = [f"| lines | samples/s | {head} | at 80%: p50 ms | p99 ms | max ms | sent | lost | duplicates |",
             "|---|---|---|---|---|---|---|---|---|"]
    for fmt, f in formats.items():
        top, at = f["ceiling"], f["at_80"]
        lines.append(f"| {fmt} | {top['samples_per_s']:,.0f} | {third_column(fmt, top)} | {_ms(at['p50_ms'])} "
                     f"| {_ms(at['p99_ms'])} | {_ms(at['max_ms'])} | {top['sent'] + at['sent']:,} | "
                     f"{top['lost'] + at['lost']} | {top['duplicates'] + at['duplicates']} |")
    return lines


def table(r: dict) -> list[str]:
    """The report's section: one row per format (and per format on the emulated Pi), then the stages and
    hot spots of each format's profile."""
    lines = [f"{r['streams']} streams on one TCP connection with acknowledgements; the service pinned to core "
             f"{r['service_core']}, the sender and sink reader to core {r['load_core']}; JSON-lines sink, "
             "write-ahead log and snapshots on.", ""] + _rows(r["formats"], "per service CPU-s", lambda _fmt, top: f"{top['samples_per_cpu_s']:,.0f}")
    if "pi" in r:
        pi = r["pi"]
        lines += ["", f"The same service on the emulated Pi (qemu-user as a {pi['cpu']}, {pi['streams']} streams, "
                  "pinned to the same core; installed from the release `make deploy` pushes):", ""]
        lines += _rows(pi["formats"], "laptop / Pi", lambda fmt, _top: f"{pi['ratio'][fmt]:.1f}x")
    collector = [f"{fmt} {100 * f['ceiling']['gc_share']:.1f}% (longest pause "
                 f"{f['ceiling']['gc_longest_ms']:.1f} ms)" for fmt, f in r["formats"].items()
                 if f["ceiling"].get("gc_share") is not None and f["ceiling"].get("gc_longest_ms") is not None]
    if collector:
        lines += ["", "The cyclic garbage collector's share of the service's CPU time at the ceiling (status.json's "
                  f"`gc`, timed by the service): {'; '.join(collector)}."]
    disk = [f"{fmt}: " + ", ".join(f"{name} {d['count']:,} fsyncs, {d['seconds']:.2f} s in all, longest "
                                   f"{d['longest_ms']:.1f} ms, {d['over_10ms']} over 10 ms" for name, d in fsync.items())
            for fmt, f in r["formats"].items() if (fsync := f["at_80"].get("fsync"))]
    if disk:
        lines += ["", "The disk under the 80% runs (status.json's `fsync`, timed by the service; under fsync = "
                  "\"batch\" a round's forecasts wait for the write-ahead log's fsync, on the main thread, so a slow "
                  f"one delays every sample queued behind it): {'; '.join(disk)}."]
    for fmt, f in r["formats"].items():
        p = f["profile"]
        total = p["total_s"] or 1.0
        shares = ", ".join(f"{stage} {100 * t / total:.0f}%" for stage, t in p["stages"].items())
        lines += ["", f"Where the service's CPU time goes ({fmt}, cProfile in every thread): {shares}. cProfile "
                  "charges its own overhead to every Python call, so call-heavy code looks 2-3x its size (a "
                  "stage's share is where to look, not what removing it would gain).", "",
                  "| hot spot | stage | share |", "|---|---|---|"]
        lines += [f"| `{h['function']}` | {h['stage']} | {100 * h['own_s'] / total:.1f}% |" for h in p["hot"][:8]]
    return lines


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m pipeline service-ceiling", description=__doc__.split("\n")[0])
    p.add_argument("bundle", help="a forecast bundle folder")
    p.add_argument("--quick", action="store_true", help="16 streams, a few seconds per run (the tests)")
    p.add_argument("--streams", type=int, help="streams (default 64)")
    p.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    p.add_argument("--pi-emu", action="store_true",
                   help="also on the emulated Pi (qemu-user Cortex-A72 in a chroot of its root file system; root)")
    args = p.parse_args(argv)
    if not (Path(args.bundle) / "manifest.json").is_file():
        print(f"error: {args.bundle}: not a bundle folder (no manifest.json)", file=sys.stderr)
        return 2
    plan = QUICK if args.quick else FULL
    if args.streams is not None:
        if args.streams < 1:
            print("error: --streams must be positive", file=sys.stderr)
            return 2
        plan = CeilingPlan(**{**plan.__dict__, "streams": args.streams})
    from pipeline.ceiling_pi import PiError

    try:
        # the emulator translates code as it first runs: a longer warm-up before the Pi's window
        pi_plan = CeilingPlan(**{**plan.__dict__, "warmup_s": max(plan.warmup_s, PI_WARMUP_S)}) if args.pi_emu else None
        result = measure(args.bundle, plan, tuple(args.formats), pi_plan=pi_plan)
    except PiError as e:
        print(f"error: the emulated Pi: {e}", file=sys.stderr)
        return 2
    print("\n".join(table(result)), file=sys.stderr)
    print(json.dumps(result))
    return 0
