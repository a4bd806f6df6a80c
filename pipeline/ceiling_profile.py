"""Run the edge service with cProfile in every thread, CPU time per thread, and say where the time goes.

    python -m pipeline.ceiling_profile STATS.json -- serve --config edge.toml --fresh

The service is one main thread (queue -> model -> anomaly -> sinks -> acknowledgements) and one thread per
source (reading, splitting and parsing lines). cProfile only sees the thread that enabled it, so every
thread gets its own profiler, started inside the thread (Thread.run is wrapped) and timed with
`time.thread_time` (CPU seconds of that thread, so a thread blocked on a queue or a socket costs nothing).
At exit the profiles are merged and every function's own time is put in one stage by the file it lives in;
a built-in (json's C encoder, a socket send, an interpreter invoke) goes to the stages of its callers, in
proportion to the time spent calling it from each.
"""
from __future__ import annotations

import cProfile
import json
import pstats
import sys
import threading
import time
from pathlib import Path

# the stage a function belongs to, by the first of these fragments its file name contains
STAGES = (
    ("edge_runtime/service/sources.py", "read"), ("selectors.py", "read"), ("socket.py", "read"),
    ("edge_runtime/service/lines.py", "parse"), ("edge_runtime/bounds.py", "parse"), ("json/decoder.py", "parse"),
    ("queue.py", "queue"), ("threading.py", "queue"),
    ("edge_runtime/pool.py", "model"), ("edge_runtime/batched.py", "model"), ("edge_runtime/session.py", "model"),
    ("edge_runtime/quant.py", "model"), ("edge_runtime/binding.py", "model"), ("edge_runtime/resident.py", "model"),
    ("tflite_runtime", "model"), ("ai_edge_litert", "model"), ("numpy", "model"),
    ("edge_runtime/anomaly.py", "anomaly"),
    ("edge_runtime/service/sinks.py", "sink"), ("edge_runtime/service/compact.py", "sink"), ("json/encoder.py", "sink"), ("json/__init__.py", "sink"),
    ("edge_runtime/service/wal.py", "wal"), ("edge_runtime/service/snapshot.py", "wal"),
    ("edge_runtime/service/metrics.py", "status"), ("edge_runtime/service/web.py", "status"),
    ("edge_runtime/service/log.py", "status"),
    ("edge_runtime/service/service.py", "loop"),
)
OTHER = "other"


def stage_of(filename: str) -> str | None:
    """The stage of a function defined in `filename`; None for a built-in ('~'), which goes to its callers."""
    if filename == "~":
        return None
    path = filename.replace("\\", "/")
    return next((stage for fragment, stage in STAGES if fragment in path), OTHER)


def _name(func: tuple) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    parts = Path(filename).parts
    return f"{'/'.join(parts[-2:])}:{line}({name})"


def breakdown(stats: pstats.Stats, top: int = 10) -> dict:
    """{stages: {stage: CPU s}, hot: [{function, stage, own_s}], total_s} from merged profiles."""
    raw = stats.stats  # func -> (primitive calls, calls, own time, cumulative, callers)
    stages: dict[str, float] = {}
    hot = []
    for func, (_cc, calls, own, _cum, callers) in raw.items():
        stage = stage_of(func[0])
        if stage is None:  # a built-in: split its own time over its callers' stages
            by_caller = {c: v[2] for c, v in callers.items()}  # caller -> own time of this built-in under it
            spread = sum(by_caller.values()) or 1.0
            shares = {stage_of(c[0]) or OTHER: 0.0 for c in by_caller} or {OTHER: 0.0}
            for caller, t in by_caller.items():
                shares[stage_of(caller[0]) or OTHER] += own * t / spread
            if not by_caller:
                shares[OTHER] = own
            for s, t in shares.items():
                stages[s] = stages.get(s, 0.0) + t
            stage = max(shares, key=shares.get)
        else:
            stages[stage] = stages.get(stage, 0.0) + own
        hot.append({"function": _name(func), "stage": stage, "own_s": own, "calls": calls})
    hot.sort(key=lambda h: -h["own_s"])
    total = sum(stages.values())
    return {"total_s": total, "stages": dict(sorted(stages.items(), key=lambda kv: -kv[1])), "hot": hot[:top]}


class ThreadProfiles:
    """A cProfile.Profile per thread, each enabled inside its own thread."""

    def __init__(self):
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()
        self.current: cProfile.Profile | None = None  # the main thread's, which merged() may stop

    def new(self) -> cProfile.Profile:
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append(profile)
        return profile

    def wrap_threads(self) -> None:
        run = threading.Thread.run
        profiles = self

        def profiled_run(thread):
            profile = profiles.new()
            profile.enable()
            try:
                run(thread)
            finally:
                profile.disable()
        threading.Thread.run = profiled_run

    def merged(self) -> pstats.Stats:
        """Every thread's profile so far. Only the calling thread's is disabled: disabling another thread's
        profiler from here closes its open calls (a selector's poll) with this thread's CPU clock, which
        once charged 12 s to a poll; a thread still running keeps counting, its finished calls are taken."""
        with self._lock:
            taken = list(self.profiles)
        snapshots = []
        for p in taken:
            if p is self.current:
                p.disable()
            p.snapshot_stats()
            snapshots.append(_Snapshot(p.stats))
        stats = pstats.Stats(snapshots[0])
        for snapshot in snapshots[1:]:
            stats.add(snapshot)
        return stats


class _Snapshot:
    """What pstats.Stats reads from a profile (create_stats, stats), without stopping the profile."""

    def __init__(self, stats: dict):
        self.stats = dict(stats)

    def create_stats(self) -> None:
        pass


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        print("usage: python -m pipeline.ceiling_profile STATS.json -- serve ARGS...", file=sys.stderr)
        return 2
    out, service_args = Path(argv[0]), argv[2:]
    from edge_runtime.cli import main as runtime_main

    profiles = ThreadProfiles()
    profiles.wrap_threads()
    main_profile = profiles.current = profiles.new()
    main_profile.enable()
    try:
        code = runtime_main(service_args)
    finally:
        main_profile.disable()
        out.write_text(json.dumps(breakdown(profiles.merged())))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
