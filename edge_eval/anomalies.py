"""Score a bundle's anomaly detector on labelled streams, run the way the device runs it.

Each labelled stream (a CSV with its `<name>.labels.json`, written by
`python -m train.anomalies`) goes through one Session one sample at a time,
state never reset; from the labels' `scored_from` row on, each residual
(sample minus the forecast made one step earlier, sensor units) goes to an
AnomalyTracker built from the bundle's manifest.

Event-level scoring, per stream:
  detected      an injected anomaly [start, end) is detected when an alarm starts in
                [start, end + tolerance); its delay is that start minus `start`
  false alarm   an alarm whose span [alarm start, alarm end] overlaps no
                [start, end + tolerance) window
  precision     detected / (detected + false alarms); recall  detected / anomalies
Several alarms inside one anomaly count once (as one detection), so a flood
is not rewarded; they are counted as `alarms` for the record.

    python -m edge_eval anomalies artifacts/temperature-lstm runs/temperature-lstm/anomalies/*.csv
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge_runtime.anomaly import AnomalySpec, AnomalyTracker
from edge_runtime.csvrows import CsvError, CsvRows, open_csv
from edge_runtime.manifest import BundleError
from edge_runtime.model import Model

TOLERANCE = 10  # samples after an anomaly's end in which an alarm start still counts as its detection
LABELS_SUFFIX = ".labels.json"


@dataclass(frozen=True)
class Labelled:
    anomalies: list[dict]  # kind, start, end (rows), channel, size
    scored_from: int
    kind: str


def read_labels(path: Path) -> Labelled:
    path = Path(path)
    try:
        d = json.loads(path.read_text())
        anomalies = [{"kind": str(a["kind"]), "start": int(a["start"]), "end": int(a["end"])} for a in d["anomalies"]]
        labelled = Labelled(anomalies, int(d["scored_from"]), str(d.get("kind", "mixed")))
    except FileNotFoundError:
        raise CsvError(f"{path}: labels file not found (written next to the CSV by python -m train.anomalies)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise CsvError(f"{path}: not a labels file ({e!r})") from None
    bad = [a for a in anomalies if not labelled.scored_from <= a["start"] < a["end"]]
    if bad:
        raise CsvError(f"{path}: anomalies must lie after scored_from={labelled.scored_from} with start < end: {bad[:3]}")
    return labelled


def read_values(path: Path, channels: list[str]) -> np.ndarray:
    """A CSV log's bundle channels, (T, C) float32; any bad row is an error naming its line."""
    with open_csv(str(path)) as f:
        rows = list(CsvRows(f, str(path), channels))
    errors = [r for r in rows if isinstance(r, CsvError)]
    if errors:
        raise errors[0]
    return np.asarray([r.values for r in rows], np.float32).reshape(-1, len(channels))


def detect(model: Model, spec: AnomalySpec, values: np.ndarray, scored_from: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Run the stream; return per-row scores (T,) (NaN before scored_from) and alarms [(start, end)].

    An alarm still active at the last row ends at len(values).
    """
    session, tracker = model.session(), AnomalyTracker(spec)
    target = list(model.manifest.target)
    scores = np.full(len(values), np.nan)
    alarms, opened, forecast = [], None, None
    for t, row in enumerate(values):
        if forecast is not None and t >= scored_from:
            scores[t], event = tracker.update(row[target] - forecast)
            if event == "start":
                opened = t
            elif event == "end":
                alarms.append((opened, t))
                opened = None
        forecast = session.step(row)  # (O,) the next sample, sensor units
    if opened is not None:
        alarms.append((opened, len(values)))
    return scores, alarms


def match(anomalies: list[dict], alarms: list[tuple[int, int]], tolerance: int = TOLERANCE) -> dict:
    """Event-level counts and per-kind detections/delays (see the module docstring)."""
    windows = [(a["start"], a["end"] + tolerance) for a in anomalies]
    per_kind: dict[str, dict] = {}
    for a, (lo, hi) in zip(anomalies, windows):
        k = per_kind.setdefault(a["kind"], {"events": 0, "detected": 0, "delays": []})
        k["events"] += 1
        starts = [s for s, _ in alarms if lo <= s < hi]
        if starts:
            k["detected"] += 1
            k["delays"].append(min(starts) - a["start"])
    false_alarms = sum(not any(s < hi and e >= lo for lo, hi in windows) for s, e in alarms)
    return {"per_kind": per_kind, "false_alarms": false_alarms, "alarms": len(alarms)}


def summarize(events: int, detected: int, false_alarms: int, delays: list[int]) -> dict:
    precision = detected / (detected + false_alarms) if detected + false_alarms else None
    recall = detected / events if events else None
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0 else
          (0.0 if events else None))
    return {"events": events, "detected": detected, "false_alarms": false_alarms,
            "precision": precision, "recall": recall, "f1": f1,
            "delay_median": float(np.median(delays)) if delays else None,
            "delay_max": int(max(delays)) if delays else None}


def evaluate_file(model: Model, spec: AnomalySpec, csv_path: Path, tolerance: int = TOLERANCE,
                  trace: bool = False) -> dict:
    """One labelled CSV -> its counts, per kind and overall (and the per-row trace when asked)."""
    csv_path = Path(csv_path)
    labels = read_labels(csv_path.with_name(csv_path.stem + LABELS_SUFFIX))
    values = read_values(csv_path, list(model.manifest.channels))
    if any(a["end"] > len(values) for a in labels.anomalies):
        raise CsvError(f"{csv_path}: labels reach past its {len(values)} rows")
    scores, alarms = detect(model, spec, values, labels.scored_from)
    counts = match(labels.anomalies, alarms, tolerance)
    kinds = counts["per_kind"]
    result = {
        "file": str(csv_path), "kind": labels.kind, "rows": len(values),
        "scored_samples": len(values) - labels.scored_from, "tolerance": tolerance,
        "alarms": counts["alarms"], "delays": [d for k in kinds.values() for d in k["delays"]],
        **summarize(sum(k["events"] for k in kinds.values()), sum(k["detected"] for k in kinds.values()),
                    counts["false_alarms"], [d for k in kinds.values() for d in k["delays"]]),
        # in a mixed stream a false alarm belongs to no kind: per kind only recall and delay
        "per_kind": {name: summarize(k["events"], k["detected"], 0, k["delays"]) | {"precision": None, "f1": None}
                     for name, k in kinds.items()},
    }
    if trace:
        result["trace"] = {"scores": [None if np.isnan(s) else round(float(s), 4) for s in scores],
                           "alarms": alarms}
    return result


def evaluate(model: Model, csv_paths: list[Path], tolerance: int = TOLERANCE, trace: bool = False,
             residual_only: bool = False) -> dict:
    """Score every labelled CSV; residual_only turns the stillness check off (for comparison)."""
    spec = AnomalySpec.from_manifest(model.manifest)
    if spec is None:
        raise BundleError(f"{model.manifest.path}: the manifest has no 'anomaly' section; "
                          "convert the run again to calibrate one")
    if residual_only:
        spec = replace(spec, stillness_floor=None)
    files = [evaluate_file(model, spec, p, tolerance, trace) for p in csv_paths]
    return {"bundle": str(model.manifest.path), "variant": model.variant.name, "backend": model.backend,
            "threshold": spec.threshold, "clear_threshold": spec.clear_threshold, "clear_steps": spec.clear_steps,
            "stillness_check": spec.stillness_floor is not None, "tolerance": tolerance, "files": files}
