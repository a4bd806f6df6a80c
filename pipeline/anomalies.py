"""python -m pipeline anomalies: how well each bundle's anomaly detector finds injected anomalies.

For every run/bundle pair: labelled copies of the run's held-out test split
(`train.anomalies`: one stream per kind and repeat, a mixed one, a clean one)
are scored by `python -m edge_eval anomalies` in a separate process, as a
device runs them (Session step by step, AnomalyTracker from the manifest).
Then per kind, over that kind's streams: precision, recall, F1 and detection
delay; the clean stream gives the false-alarm rate; the same streams scored
with the residual level check alone show what the stillness check
adds. Writes reports/anomalies.md and a timeline PNG of a mixed stream.
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
    cmd = [sys.executable, "-m", "edge_eval", "anomalies", str(bundle), *map(str, csv_paths), "--trace"]
    if residual_only:
        cmd.append("--residual-only")
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:5])} ... failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def per_kind(result: dict) -> dict[str, dict]:
    """Sum the single-kind streams of each kind; 'clean' gives alarms per 10,000 clean samples."""
    from edge_eval.anomalies import summarize

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


def run_anomalies(names: list[str], runs_dir: Path, artifacts_dir: Path, seed: int = 0,
                  progress: bool = True) -> list[dict]:
    """Evaluate every named run/bundle pair whose bundle has an anomaly section."""
    results = []
    for name in tqdm(names, desc="anomalies", disable=not progress, dynamic_ncols=True):
        manifest = json.loads((artifacts_dir / name / "manifest.json").read_text())
        if "anomaly" not in manifest:
            print(f"skipped {name}: its manifest has no anomaly section (convert it again)", file=sys.stderr)
            continue
        results.append(evaluate_run(runs_dir / name, artifacts_dir / name, seed))
    return results


def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def table(results: list[dict]) -> str:
    """One row per model and kind; the last columns show the residual level check alone."""
    lines = ["| model | kind | events | detected | false alarms | precision | recall | F1 | delay median / max "
             "| F1, level check only |", "|" + "---|" * 10]
    for r in results:
        for kind, k in r["kinds"].items():
            if kind == "clean":
                only = r["residual_only"]["clean"]
                lines.append(f"| {r['name']} | clean (no anomaly) | 0 | - | {k['false_alarms']} in {k['samples']} "
                             f"samples ({k['per_10k']:.1f} per 10k) | - | - | - | - | {only['false_alarms']} alarms |")
                continue
            lines.append(f"| {r['name']} | {kind} | {k['events']} | {k['detected']} | {k['false_alarms']} | "
                         f"{_fmt(k['precision'])} | {_fmt(k['recall'])} | {_fmt(k['f1'])} | "
                         f"{_fmt(k['delay_median'], '.0f')} / {_fmt(k['delay_max'], 'd')} | "
                         f"{_fmt(r['residual_only'][kind]['f1'])} |")
    return "\n".join(lines)


def summary_table(results: list[dict]) -> str:
    """F1 per model (rows) and kind (columns), and clean false alarms per 10k samples: for the demo."""
    kinds = [k for k in KIND_ORDER if any(k in r["kinds"] for r in results)]
    lines = ["| model | " + " | ".join(kinds) + " | false alarms / 10k clean |", "|" + "---|" * (len(kinds) + 2)]
    for r in results:
        cells = [_fmt(r["kinds"].get(k, {}).get("f1")) for k in kinds]
        clean = r["kinds"].get("clean", {}).get("per_10k")
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {_fmt(clean, '.1f')} |")
    return "\n".join(lines)


def plot_timeline(result: dict, path: Path, max_rows: int = 3000) -> None:
    """The mixed stream: readings with the injected anomalies shaded, the score, the threshold, the alarms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from edge_eval.anomalies import read_labels, read_values
    from edge_runtime.manifest import read_manifest

    mixed = result["mixed"]
    manifest = read_manifest(result["bundle"])
    csv_path = Path(mixed["file"])
    values = read_values(csv_path, list(manifest.channels))  # (T, C)
    labels = read_labels(csv_path.with_name(csv_path.stem + ".labels.json"))
    scores = np.array([np.nan if s is None else s for s in mixed["trace"]["scores"]])  # (T,)
    end = min(len(values), labels.scored_from + max_rows)
    rows = np.arange(labels.scored_from, end)
    target = manifest.target[0]
    colours = dict(zip(KIND_ORDER, ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:green")))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, height_ratios=(3, 2))
    top.plot(rows, values[rows, target], lw=0.7, color="k", label=manifest.channels[target])
    dropped = np.zeros(len(values), bool)  # (T,) dropout rows would squash the y axis: keep them off the scale
    for a in labels.anomalies:
        dropped[a["start"]:a["end"]] |= a["kind"] == "dropout"
    shown = values[rows[~dropped[rows]], target]
    pad = 0.15 * (shown.max() - shown.min() + 1e-9)
    top.set_ylim(shown.min() - pad, shown.max() + pad)
    for a in labels.anomalies:
        if a["start"] < end:
            for ax in (top, bottom):
                ax.axvspan(a["start"], max(a["end"], a["start"] + 2), color=colours.get(a["kind"], "grey"),
                           alpha=0.25, lw=0)
            top.text(a["start"], shown.max() + pad, a["kind"],
                     fontsize=7, rotation=90, va="top", color=colours.get(a["kind"], "grey"))
    top.set_ylabel(f"{manifest.channels[target]} ({(manifest.raw.get('units') or [''])[target]})")
    top.set_title(f"{result['name']}: injected anomalies (shaded), score and alarms on the edge runtime")
    bottom.semilogy(rows, np.maximum(scores[rows], 1e-2), lw=0.7, color="tab:blue", label="score (max |z|, stillness)")
    bottom.axhline(result["threshold"], color="tab:red", ls="--", lw=1, label=f"threshold {result['threshold']:.1f}")
    for start, stop in mixed["trace"]["alarms"]:
        if start < end:
            bottom.axvspan(start, min(stop, end), ymin=0.0, ymax=0.06, color="tab:red")
    bottom.set_ylabel("score (log)")
    bottom.set_xlabel("sample (test split; red bars: alarms; readings during a dropout may lie off the upper panel)")
    bottom.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


DEFINITIONS_TEXT = """\
Anomalies are injected into the held-out test split only, after its warm-up rows, on the forecast
channel; sizes are in units of sigma, that channel's standard deviation over the clean test part.

| kind | definition |
|---|---|
| spike | one sample off by +-3..6 sigma |
| level_shift | an offset of +-1..2 sigma for 50..200 samples, then back |
| stuck | the reading freezes at its last good value for 30..200 samples |
| dropout | the reading falls to 0 (sensor units: a disconnected input on a 0-based ADC) for 5..50 samples |
| drift | an offset ramps linearly to +-1..2 sigma and back over 200..600 samples (no step) |

Scoring is per event: an anomaly is detected when an alarm starts within its window or up to 10
samples after it (delay = that start minus the anomaly's first sample); an alarm that overlaps no
anomaly window is a false alarm; precision = detected / (detected + false alarms). Each kind is
scored on its own streams (3 placements per model), so every false alarm is charged to one kind;
the clean row is the unmodified test split. "Level check only" scores the same streams with the
stillness check turned off.
"""


def timeline_models(results: list[dict]) -> list[dict]:
    """A timeline each for the temperature and vibration LSTMs, else the first two LSTMs, else the first model."""
    preferred = [r for name in ("temperature-lstm", "vibration-lstm") for r in results if r["name"] == name]
    return preferred or [r for r in results if r["name"].endswith("-lstm")][:2] or results[:1]


def write_report(results: list[dict], report_dir: Path) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    text = ["# Anomaly detection on labelled synthetic streams", "",
            "Each bundle runs step by step on the edge runtime (Session + AnomalyTracker with the thresholds "
            "its manifest was calibrated with on validation data).", "", DEFINITIONS_TEXT, "## F1 per kind", "",
            summary_table(results), "", "## Every figure", "", table(results), ""]
    for r in timeline_models(results):
        png = f"anomalies_{r['name']}.png"
        plot_timeline(r, report_dir / png)
        text += [f"![timeline of {r['name']}]({png})", ""]
    path = report_dir / "anomalies.md"
    path.write_text("\n".join(text))
    (report_dir / "anomalies.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "mixed"} for r in results], indent=1))
    return path
