"""Anomaly scoring on forecast residuals, with hysteresis so one spike raises one event.

The residual of a sample is what the sensor read minus what the model forecast
for it one step earlier, in sensor units, per target channel. Divided by the
residual spread seen on validation data (stored in the bundle), it is a z
score; the level score is the largest |z| over the channels.

A second, optional check looks for a residual that has gone still: a stuck
sensor repeats its last value, the model's input stops changing and the
residual loses the sensor noise it always carries. The tracker keeps an
exponential average of |z_t - z_{t-1}| per channel over about
`stillness_window` samples; when it falls below `stillness_floor` (calibrated
on validation, where it never got that low), the stillness score
`threshold * floor / average` rises past the threshold. A bundle whose
validation residuals are sometimes legitimately still (an exactly
predictable sequence) is written without a floor, and the check is off.

The stream's score is the larger of the two. An alarm starts when the score
exceeds `threshold` and ends only after the score has stayed below
`clear_threshold` for `clear_steps` samples in a row. A spike therefore gives
one start and one end, not a flood: the spiked sample and the forecast made
from it are both off, and both fall inside one alarm.

The spec lives in the manifest's "anomaly" section (written by convert/ from
validation data). A tracker is per stream and its state is a few numbers per
channel, so it snapshots and restores with the stream (to_dict / load_dict).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime.manifest import BundleError, Manifest


STILLNESS_CAP = 10.0  # the stillness score tops out at this multiple of the threshold


def ema_step(mean: np.ndarray, value: np.ndarray, seen: int, window: int) -> tuple[np.ndarray, int]:
    """One step of an exponential average with span `window`; returns (mean, seen).

    Its first `window` values are averaged plainly (weight 1/seen), so it does
    not start from an arbitrary value; `seen` is capped at window + 1, and the
    average is trusted once seen > window.
    """
    seen = min(seen + 1, window + 1)
    weight = max(2.0 / (window + 1), 1.0 / seen)
    return mean + weight * (value - mean), seen


@dataclass(frozen=True)
class AnomalySpec:
    residual_std: tuple[float, ...]  # (O,) sensor units, per target channel, from validation
    threshold: float  # |z| above this starts an alarm
    clear_threshold: float  # |z| below this for clear_steps samples ends it
    clear_steps: int
    stillness_floor: tuple[float, ...] | None = None  # (O,) mean |dz| below this reads as stuck; None: off
    stillness_window: int = 16  # samples the mean |dz| averages over (EMA span)

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "AnomalySpec | None":
        """The bundle's spec, or None for a bundle made without one (no anomaly scoring)."""
        section = manifest.raw.get("anomaly")
        if section is None:
            return None
        where = f"{manifest.path}/manifest.json anomaly"
        try:
            floor = section.get("stillness_floor")
            spec = cls(tuple(float(s) for s in section["residual_std"]), float(section["threshold"]),
                       float(section.get("clear_threshold", section["threshold"] / 2)),
                       int(section.get("clear_steps", 3)),
                       None if floor is None else tuple(float(f) for f in floor),
                       int(section.get("stillness_window", 16)))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BundleError(f"{where}: malformed ({e!r})") from None
        channels = manifest.output.shape[-1]
        if len(spec.residual_std) != channels or min(spec.residual_std) <= 0:
            raise BundleError(f"{where}: residual_std needs one positive value per output channel")
        if not 0 < spec.clear_threshold <= spec.threshold or spec.clear_steps < 1:
            raise BundleError(f"{where}: need 0 < clear_threshold <= threshold and clear_steps >= 1")
        if spec.stillness_floor is not None and (len(spec.stillness_floor) != channels
                                                 or min(spec.stillness_floor) <= 0 or spec.stillness_window < 2):
            raise BundleError(f"{where}: stillness_floor needs one positive value per output channel "
                              "and stillness_window >= 2")
        return spec


class AnomalyTracker:
    """One stream's alarm: feed it each residual, get back its score and any event.

    The state is a few Python floats per channel, not numpy arrays: a tracker sees one sample of a few
    channels at a time, where numpy's per-call overhead (a dozen calls a sample) was 15% of the service's
    CPU at its ceiling. Every operation is the same IEEE double operation numpy did, and a NaN goes
    through a max as numpy's would (tests/test_anomalies.py checks it against the numpy form, bit for bit).
    """

    def __init__(self, spec: AnomalySpec):
        self.spec = spec
        self._inverse_std = [1.0 / float(s) for s in spec.residual_std]  # (O,)
        self._still = spec.stillness_floor is not None
        if self._still:
            self._floor = [float(f) for f in spec.stillness_floor]  # (O,)
            self._least_change = [f / STILLNESS_CAP for f in self._floor]  # (O,)
            self._weights = [0.0] + [max(2.0 / (spec.stillness_window + 1), 1.0 / seen)  # ema_step's, by `seen`
                                     for seen in range(1, spec.stillness_window + 2)]
        self.reset()

    def update(self, residual) -> tuple[float, str | None]:
        """residual: (O,) sensor units -> (score, "start" | "end" | None)."""
        values = residual.tolist() if isinstance(residual, np.ndarray) else [float(r) for r in residual]
        z = [r * i for r, i in zip(values, self._inverse_std, strict=True)]  # (O,)
        score = _max([abs(v) for v in z])
        if self._still:
            score = max(score, self._stillness(z))
        if not self.active:
            if score > self.spec.threshold:
                self.active, self.quiet_steps = True, 0
                return score, "start"
            return score, None
        self.quiet_steps = self.quiet_steps + 1 if score < self.spec.clear_threshold else 0
        if self.quiet_steps >= self.spec.clear_steps:
            self.active, self.quiet_steps = False, 0
            return score, "end"
        return score, None

    def _stillness(self, z: list[float]) -> float:
        """threshold * floor / (EMA of |dz|), largest over channels; 0 until the EMA has a window of history."""
        if not self.primed:  # the first z after a reset has no predecessor
            self.last_z, self.primed = z, True
            return 0.0
        window = self.spec.stillness_window
        self.still_seen = min(self.still_seen + 1, window + 1)  # ema_step, one channel at a time
        weight = self._weights[self.still_seen]
        self.mean_change = [m + weight * (abs(v - last) - m) for m, v, last in zip(self.mean_change, z, self.last_z)]
        self.last_z = z
        if self.still_seen <= window:
            return 0.0
        # capped at STILLNESS_CAP x threshold: a frozen reading has |dz| = 0 exactly, and the score
        # should say "far past the threshold", not grow without bound
        threshold = self.spec.threshold
        return _max([threshold * f / _maximum(m, least)
                     for f, m, least in zip(self._floor, self.mean_change, self._least_change)])

    def reset(self) -> None:
        self.active, self.quiet_steps = False, 0
        channels = len(self.spec.residual_std)
        self.primed = False  # whether last_z holds a previous z
        self.last_z = [0.0] * channels  # (O,) previous z, for the stillness check
        self.mean_change = [0.0] * channels  # (O,) EMA of |z_t - z_{t-1}|
        self.still_seen = 0  # changes averaged by the stillness check, capped at window + 1

    def to_dict(self) -> dict:
        d = {"active": self.active, "quiet_steps": self.quiet_steps}
        if self._still:
            d.update(primed=self.primed, last_z=list(self.last_z), mean_change=list(self.mean_change),
                     still_seen=self.still_seen)
        return d

    def load_dict(self, d: dict) -> None:
        """Restore a to_dict() snapshot; a check the snapshot has no values for starts afresh."""
        self.reset()
        self.active, self.quiet_steps = bool(d["active"]), int(d["quiet_steps"])
        if self._still and "mean_change" in d:
            self.last_z = self._channel_values(d, "last_z").tolist()
            self.mean_change = self._channel_values(d, "mean_change").tolist()
            self.primed, self.still_seen = bool(d["primed"]), int(d["still_seen"])
            if not 0 <= self.still_seen <= self.spec.stillness_window + 1:  # TrackerBank indexes its weights by it
                raise ValueError(f"anomaly tracker snapshot: still_seen {self.still_seen} is outside 0.."
                                 f"{self.spec.stillness_window + 1} (stillness_window + 1)")

    def _channel_values(self, d: dict, key: str) -> np.ndarray:
        values = np.asarray(d[key], np.float64)
        channels = len(self.spec.residual_std)
        if values.shape != (channels,):
            raise ValueError(f"anomaly tracker snapshot: {key} has shape {list(values.shape)}, "
                             f"this bundle scores {channels} channel(s)")
        return values


class TrackerBank:
    """The anomaly trackers of many streams as arrays: row r is the AnomalyTracker of the stream in the
    StreamPool's row r. One `update` scores a whole round of streams in a dozen numpy calls, where one
    AnomalyTracker per stream made a dozen Python operations per sample (a fifth of the service's CPU at its
    ceiling). Element for element these are the same IEEE double operations, in the same order, as
    AnomalyTracker's; a NaN goes through each max as it does there (tests/test_anomaly_tracker.py checks
    scores, events and snapshots bit for bit)."""

    def __init__(self, spec: AnomalySpec, rows: int):
        self.spec = spec
        self._single = AnomalyTracker(spec)  # to_dict/load_dict's format and checks, one row at a time
        self._inverse_std = np.array(self._single._inverse_std)  # (O,)
        self._still = self._single._still
        if self._still:
            self._floor = np.array(self._single._floor)  # (O,)
            self._least_change = np.array(self._single._least_change)  # (O,)
            self._weights = np.array(self._single._weights)  # (window + 2,) by still_seen
        channels = len(spec.residual_std)
        self.active = np.zeros(rows, bool)
        self.quiet_steps = np.zeros(rows, np.int64)
        self.primed = np.zeros(rows, bool)
        self.last_z = np.zeros((rows, channels))  # (R, O)
        self.mean_change = np.zeros((rows, channels))  # (R, O)
        self.still_seen = np.zeros(rows, np.int64)

    def reset(self, row: int) -> None:
        self.active[row] = self.primed[row] = False
        self.quiet_steps[row] = self.still_seen[row] = 0
        self.last_z[row] = self.mean_change[row] = 0.0

    def to_dict(self, row: int) -> dict:
        """AnomalyTracker.to_dict of this row."""
        self._put(row, self._single)
        return self._single.to_dict()

    def load_dict(self, row: int, d: dict) -> None:
        """AnomalyTracker.load_dict into this row (a ValueError leaves the row as it was)."""
        self._single.load_dict(d)
        t = self._single
        self.active[row], self.quiet_steps[row] = t.active, t.quiet_steps
        if self._still:
            self.primed[row], self.still_seen[row] = t.primed, t.still_seen
            self.last_z[row], self.mean_change[row] = t.last_z, t.mean_change

    def _put(self, row: int, tracker: AnomalyTracker) -> None:
        tracker.active, tracker.quiet_steps = bool(self.active[row]), int(self.quiet_steps[row])
        tracker.primed, tracker.still_seen = bool(self.primed[row]), int(self.still_seen[row])
        tracker.last_z, tracker.mean_change = self.last_z[row].tolist(), self.mean_change[row].tolist()

    def update(self, rows: np.ndarray, residuals: np.ndarray) -> tuple[list[float], list[str | None]]:
        """rows (B,) distinct rows; residuals (B, O) float64 sensor units -> (B,) scores and events
        ("start" | "end" | None), as AnomalyTracker.update for each row."""
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # NaN and inf pass through, as there
            z = residuals * self._inverse_std  # (B, O)
            score = np.abs(z).max(axis=1)  # (B,): NaN if any channel is
            if self._still:
                still = self._stillness(rows, z)
                score = np.where(still > score, still, score)  # Python's max(score, still): a NaN still loses
            spec = self.spec
            active, quiet = self.active[rows], self.quiet_steps[rows]  # (B,)
            starts = ~active & (score > spec.threshold)
            counted = np.where(score < spec.clear_threshold, quiet + 1, 0)  # an active row's quiet steps
            ends = active & (counted >= spec.clear_steps)
        self.active[rows] = starts | (active & ~ends)
        # an inactive row keeps its count unless it starts (as AnomalyTracker, for any snapshot it loaded)
        self.quiet_steps[rows] = np.where(active, np.where(ends, 0, counted), np.where(starts, 0, quiet))
        events = [None] * len(rows)
        for k in np.flatnonzero(starts | ends).tolist():
            events[k] = "start" if starts[k] else "end"
        return score.tolist(), events

    def _stillness(self, rows: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(B,) AnomalyTracker._stillness per row: 0 for a row's first z and until a window of history."""
        window = self.spec.stillness_window
        primed = self.primed[rows]  # (B,)
        seen = self.still_seen[rows]
        mean_change = self.mean_change[rows]  # (B, O)
        seen = np.where(primed, np.minimum(seen + 1, window + 1), seen)
        weight = self._weights[seen][:, None]  # (B, 1)
        mean_change = np.where(primed[:, None], mean_change + weight * (np.abs(z - self.last_z[rows]) - mean_change),
                               mean_change)
        self.still_seen[rows], self.mean_change[rows] = seen, mean_change
        self.last_z[rows], self.primed[rows] = z, True
        threshold = self.spec.threshold
        value = (threshold * self._floor / np.maximum(mean_change, self._least_change)).max(axis=1)  # (B,)
        return np.where(primed & (seen > window), value, 0.0)


def _max(values: list[float]) -> float:
    """max() that returns NaN when any value is NaN, as numpy's .max() does."""
    top = max(values)
    return top if top == top and all(v == v for v in values) else float("nan")


def _maximum(a: float, b: float) -> float:
    """np.maximum for two floats: NaN if either is NaN."""
    return a if a != a or a >= b else b
