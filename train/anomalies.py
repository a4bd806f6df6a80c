"""Labelled anomalies injected into a held-out sensor stream, to score a detector against.

Only the held-out test part of a run is touched (the model and the detector's
calibration never saw it), and only after its warm-up rows, so the model's
state starts from a clean history. Every injected anomaly is labelled with
its kind, its first row and one past its last row, the channel and the size.

The kinds, with sizes in units of sigma, the channel's standard deviation over
the clean scored part of the stream (so one definition fits degC and g alike):

  spike        one sample off by +-3..6 sigma (an electrical glitch)
  level_shift  an offset of +-1..2 sigma for 50..200 samples, then back (a bumped
               mount, a recalibration that was later undone)
  stuck        the reading freezes at its last good value for 30..200 samples
               (a hung ADC or a bus that returns its last register)
  dropout      the reading falls to 0 in sensor units for 5..50 samples (a
               disconnected input read by a 0-based ADC); on a channel whose
               normal range holds 0 (the accelerometer) it can read as normal
  drift        an offset that grows linearly to +-1..2 sigma over half the window
               and shrinks back over the other half, 200..600 samples in all (a
               sensor warming up and settling); no step anywhere

Events of one stream are separated by at least `GAP` clean samples so that
each alarm can be attributed to one event.

    python -m train.anomalies runs/temperature-lstm     # -> runs/temperature-lstm/anomalies/
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

KINDS = ("spike", "level_shift", "stuck", "dropout", "drift")
DROPOUT_READING = 0.0  # sensor units: what a disconnected input with a 0-based ADC reports
GAP = 60  # clean samples at least between two events (and before the first)
LABELS_SUFFIX = ".labels.json"
REPEATS = 3  # single-kind streams per kind, each with its own placements and sizes


@dataclass(frozen=True)
class KindRule:
    length: tuple[int, int]  # samples, inclusive range
    size_sigma: tuple[float, float]  # offset or peak, in units of the channel's sigma (0: not an offset)


RULES = {
    "spike": KindRule((1, 1), (3.0, 6.0)),
    "level_shift": KindRule((50, 200), (1.0, 2.0)),
    "stuck": KindRule((30, 200), (0.0, 0.0)),
    "dropout": KindRule((5, 50), (0.0, 0.0)),
    "drift": KindRule((200, 600), (1.0, 2.0)),
}
assert set(RULES) == set(KINDS)

DEFINITIONS = {
    "spike": "one sample off by +-3..6 sigma",
    "level_shift": "offset of +-1..2 sigma for 50..200 samples, then back",
    "stuck": "reading frozen at its last good value for 30..200 samples",
    "dropout": f"reading falls to {DROPOUT_READING:g} (sensor units) for 5..50 samples",
    "drift": "offset ramps linearly to +-1..2 sigma and back over 200..600 samples",
}


@dataclass(frozen=True)
class Anomaly:
    kind: str
    start: int  # first affected row
    end: int  # one past the last affected row
    channel: int  # index into the stream's channels
    size: float  # sensor units: offset (level_shift), peak offset (drift), jump (spike); 0 otherwise


@dataclass
class LabelledStream:
    kind: str  # the one kind injected, or "mixed"
    values: np.ndarray  # (T, C) float32, raw sensor units, anomalies included
    clean: np.ndarray  # (T, C) float32, the same rows before injection
    anomalies: list[Anomaly]
    scored_from: int  # rows before this are clean warm-up; a detector is scored from here on
    channels: tuple[str, ...]

    def labels(self) -> np.ndarray:
        """(T,) the kind of anomaly at each row, "" where the row is clean."""
        out = np.full(len(self.values), "", dtype=object)
        for a in self.anomalies:
            out[a.start:a.end] = a.kind
        return out


def _inject(values: np.ndarray, a: Anomaly) -> None:
    """Apply one anomaly to values (T, C) in place."""
    col = values[:, a.channel]
    if a.kind == "spike":
        col[a.start] += a.size
    elif a.kind == "level_shift":
        col[a.start:a.end] += a.size
    elif a.kind == "stuck":
        col[a.start:a.end] = col[a.start - 1]
    elif a.kind == "dropout":
        col[a.start:a.end] = DROPOUT_READING
    elif a.kind == "drift":
        n = a.end - a.start
        ramp = 1.0 - np.abs(np.linspace(-1.0, 1.0, n + 2)[1:-1])  # (n,) rises to ~1 and back, no step
        col[a.start:a.end] += a.size * ramp
    else:
        raise ValueError(f"unknown anomaly kind {a.kind!r}; choose from {', '.join(KINDS)}")


def inject(clean: np.ndarray, kinds: tuple[str, ...], scored_from: int, target: tuple[int, ...],
           seed: int, channels: tuple[str, ...] | None = None) -> LabelledStream:
    """Inject anomalies of `kinds` (cycling through them) into a copy of clean (T, C).

    Events go on the target channels (the ones the model forecasts and the
    detector scores), as many as fit with GAP clean samples around each.
    """
    unknown = [k for k in kinds if k not in RULES]
    if unknown:
        raise ValueError(f"unknown anomaly kind(s) {unknown}; choose from {', '.join(KINDS)}")
    clean = np.asarray(clean, np.float32)
    if clean.ndim != 2 or scored_from + GAP >= len(clean):
        raise ValueError(f"need a (T, C) stream longer than its warm-up ({scored_from}) + {GAP} rows, "
                         f"got shape {clean.shape}")
    rng = np.random.default_rng([seed, *(KINDS.index(k) for k in kinds)])
    sigma = clean[scored_from:].std(axis=0)  # (C,)
    values, anomalies = clean.copy(), []
    position = scored_from + GAP
    while True:
        kind = kinds[len(anomalies) % len(kinds)]
        rule = RULES[kind]
        length = int(rng.integers(rule.length[0], rule.length[1] + 1))
        if position + length + GAP > len(values):
            break
        channel = int(rng.choice(target))
        size = float(rng.uniform(*rule.size_sigma) * sigma[channel] * rng.choice([-1.0, 1.0]))
        anomaly = Anomaly(kind, position, position + length, channel, size)
        _inject(values, anomaly)
        anomalies.append(anomaly)
        position += length + GAP + int(rng.integers(0, GAP))
    name = kinds[0] if len(kinds) == 1 else "mixed"
    return LabelledStream(name, values, clean, anomalies, scored_from,
                          channels or tuple(f"ch{i}" for i in range(clean.shape[1])))


def labelled_streams(clean: np.ndarray, scored_from: int, target: tuple[int, ...], seed: int,
                     channels: tuple[str, ...] | None = None, kinds: tuple[str, ...] = KINDS,
                     repeats: int = REPEATS) -> dict[str, LabelledStream]:
    """Streams by name: `<kind>-<r>` holds one kind only (so every false alarm is charged to
    that kind), `repeats` of them per kind with different placements and sizes; "mixed" holds
    every kind in turn (for a timeline); "clean" holds none (the false-alarm rate)."""
    streams = {f"{k}-{r}": inject(clean, (k,), scored_from, target, seed + 1000 * r, channels)
               for k in kinds for r in range(repeats)}
    streams["mixed"] = inject(clean, kinds, scored_from, target, seed, channels)
    streams["clean"] = LabelledStream("clean", np.asarray(clean, np.float32).copy(), np.asarray(clean, np.float32),
                                      [], scored_from, streams["mixed"].channels)
    return streams


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_labelled(stream: LabelledStream, csv_path: Path) -> tuple[Path, Path]:
    """<name>.csv (index, channels..., label: the kind or empty) and <name>.labels.json beside it."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    labels = stream.labels()
    lines = ["index," + ",".join(stream.channels) + ",label"]
    lines += [f"{i}," + ",".join(f"{v:.7g}" for v in row) + f",{labels[i]}" for i, row in enumerate(stream.values)]
    _write_atomically(csv_path, "\n".join(lines) + "\n")
    labels_path = csv_path.with_name(csv_path.stem + LABELS_SUFFIX)
    _write_atomically(labels_path, json.dumps({
        "kind": stream.kind, "rows": len(stream.values), "scored_from": stream.scored_from,
        "channels": list(stream.channels), "dropout_reading": DROPOUT_READING, "gap": GAP,
        "definitions": DEFINITIONS, "anomalies": [asdict(a) for a in stream.anomalies]}, indent=1))
    return csv_path, labels_path


def write_run_streams(run_dir: Path, out_dir: Path | None = None, seed: int = 0,
                      repeats: int = REPEATS) -> dict[str, tuple[Path, Path]]:
    """Labelled copies of a run's held-out test split -> {stream name: (csv, labels json)}."""
    from train.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir / "anomalies"
    splits = np.load(run_dir / "splits.npz")
    _, info = load_checkpoint(run_dir / "checkpoint.safetensors")
    channels = tuple(info["stream"]["channels"])
    target = tuple(info["model"]["target"])
    streams = labelled_streams(splits["test"], int(splits["warmup"]), target, seed, channels, repeats=repeats)
    return {name: write_labelled(s, out_dir / f"{name}.csv") for name, s in streams.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.anomalies", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder written by python -m train (uses its splits.npz test split)")
    p.add_argument("--out", help="folder for <kind>.csv + <kind>.labels.json (default: RUN/anomalies)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=REPEATS, help="single-kind streams per kind")
    args = p.parse_args(argv)
    if not (Path(args.run) / "splits.npz").is_file():
        print(f"error: {args.run}: no splits.npz (not a run folder? train first with python -m train)",
              file=sys.stderr)
        return 2
    for kind, (csv_path, labels_path) in write_run_streams(Path(args.run), args.out and Path(args.out),
                                                           args.seed, args.repeats).items():
        events = len(json.loads(labels_path.read_text())["anomalies"])
        print(f"{kind:<14} {events:>3} events  {csv_path}  {labels_path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
