"""Anomaly scoring on forecast residuals, with hysteresis so one spike raises one event.

The residual of a sample is what the sensor read minus what the model forecast
for it one step earlier, in sensor units, per target channel. Divided by the
residual spread seen on validation data (stored in the bundle), it is a z
score; the stream's score is the largest |z| over its channels.

An alarm starts when the score exceeds `threshold` and ends only after the
score has stayed below `clear_threshold` for `clear_steps` samples in a row.
A spike therefore gives one start and one end, not a flood: the spiked sample
and the forecast made from it are both off, and both fall inside one alarm.

The spec lives in the manifest's "anomaly" section (written by convert/ from
validation data). A tracker is per stream and its state is two numbers, so
it snapshots and restores with the stream.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime.manifest import BundleError, Manifest


@dataclass(frozen=True)
class AnomalySpec:
    residual_std: tuple[float, ...]  # (O,) sensor units, per target channel, from validation
    threshold: float  # |z| above this starts an alarm
    clear_threshold: float  # |z| below this for clear_steps samples ends it
    clear_steps: int

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "AnomalySpec | None":
        """The bundle's spec, or None for a bundle made without one (no anomaly scoring)."""
        section = manifest.raw.get("anomaly")
        if section is None:
            return None
        where = f"{manifest.path}/manifest.json anomaly"
        try:
            spec = cls(tuple(float(s) for s in section["residual_std"]), float(section["threshold"]),
                       float(section.get("clear_threshold", section["threshold"] / 2)),
                       int(section.get("clear_steps", 3)))
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{where}: malformed ({e!r})") from None
        if len(spec.residual_std) != manifest.output.shape[-1] or min(spec.residual_std) <= 0:
            raise BundleError(f"{where}: residual_std needs one positive value per output channel")
        if not 0 < spec.clear_threshold <= spec.threshold or spec.clear_steps < 1:
            raise BundleError(f"{where}: need 0 < clear_threshold <= threshold and clear_steps >= 1")
        return spec


class AnomalyTracker:
    """One stream's alarm: feed it each residual, get back its score and any event."""

    def __init__(self, spec: AnomalySpec):
        self.spec = spec
        self._inverse_std = 1.0 / np.asarray(spec.residual_std, np.float64)  # (O,)
        self.active = False
        self.quiet_steps = 0  # consecutive samples below clear_threshold while active

    def update(self, residual) -> tuple[float, str | None]:
        """residual: (O,) sensor units -> (score, "start" | "end" | None)."""
        score = float(np.max(np.abs(np.asarray(residual, np.float64) * self._inverse_std)))
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

    def reset(self) -> None:
        self.active, self.quiet_steps = False, 0

    def to_dict(self) -> dict:
        return {"active": self.active, "quiet_steps": self.quiet_steps}

    def load_dict(self, d: dict) -> None:
        self.active, self.quiet_steps = bool(d["active"]), int(d["quiet_steps"])
