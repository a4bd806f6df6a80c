"""python -m pipeline anomalies: how well each bundle's anomaly detector finds injected anomalies.

For every run/bundle pair: labelled copies of the run's held-out test split
(`train.anomalies`: one stream per kind and repeat, a mixed one, a clean one)
are scored by `python -m edge_runtime anomalies` in a separate process, as a
device runs them (Session step by step, AnomalyTracker from the manifest).
Then per kind, over that kind's streams: precision, recall, F1 and detection
delay; the clean stream gives the false-alarm rate; the same streams scored
with the residual level check alone show what the stillness check
add. Writes reports/anomalies.md and a timeline PNG of a mixed stream.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

KIND_ORDER = ("spike", "level_shift", "stuck", "dropout", "drift")


def edge_anomalies(bundle: Path, csv_paths: list[Path], residual_only: bool = False) -> dict:
    """Score labelled CSVs in a fresh process that has only the edge runtime loaded."""
    cmd = [sys.executable, "-m", "edge_runtime", "anomalies", str(bundle), *map(str, csv_paths), "--trace"]
    if residual_only:
        cmd.append("--residual-only")
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:5])} ... failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def per_kind(result: dict) -> dict[str, dict]:
    """Sum the single-kind streams of each kind; 'clean' gives alarms per 10,000 clean samples."""
    from edge_runtime.anomaly_eval import summarize

    totals: dict[str, dict] = {}
    for f in result["files"]:
        if f["kind"] in ("mixed", "clean"):
            continue
        t = totals.setdefault(f["kind"], {"events": 0, "detected": 0, "false_alarms": 0, "delays": []})
        t["events"] += f["events"]
        t["detected"] += f["detected"]
        t["false_alarms"] += f["false_alarms"]
        t["delays"] += f["delays"]
    kinds = {k: summarize(t["events"], t["detected"], t["false_alarms"], t["delays"])
             for k, t in sorted(totals.items(), key=lambda kv: _order(kv[0]))}
    clean = [f for f in result["files"] if f["kind"] == "clean"]
    if clean:
        kinds["clean"] = {"false_alarms": sum(f["alarms"] for f in clean),
                          "samples": sum(f["scored_samples"] for f in clean)}
        kinds["clean"]["per_10k"] = 1e4 * kinds["clean"]["false_alarms"] / kinds["clean"]["samples"]
    return kinds


def _order(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def evaluate_run(run_dir: Path, bundle: Path, seed: int = 0, repeats: int = 3) -> dict:
    """Write the labelled streams for one run, score them with and without the extra checks."""
    from train.anomalies import write_run_streams

    streams = write_run_streams(run_dir, seed=seed, repeats=repeats)
    paths = [csv for csv, _ in streams.values()]
    full, residual_only = edge_anomalies(bundle, paths), edge_anomalies(bundle, paths, residual_only=True)
    return {"name": Path(bundle).name, "bundle": str(bundle), "threshold": full["threshold"],
            "stillness_check": full["stillness_check"],
            "kinds": per_kind(full), "residual_only": per_kind(residual_only),
            "mixed": next(f for f in full["files"] if f["kind"] == "mixed"), "backend": full["backend"]}
