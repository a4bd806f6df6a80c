"""The manifest's "anomaly" section, calibrated on validation residuals when a bundle is made.

The residuals come from the converted float32 step model run over the
validation split one sample at a time from a cold start, as the device runs
it; the warm-up rows are not used. The test split is never looked at: the
anomaly evaluation injects its labelled anomalies there.

Rules (sensor units; z = residual / residual_std; score = max |z| over channels):
  residual_std      per target channel, the residuals' standard deviation
  threshold         max(THRESHOLD_FLOOR, THRESHOLD_MARGIN x the 99.9% quantile of the score):
                    above nearly all of validation with room to spare, and never so low that
                    ordinary Gaussian noise (|z| > 4: 6e-5 of samples) raises alarms
  clear_threshold   the 95% quantile of the score, at most threshold / 2: a calm residual
                    sits below it 19 samples in 20
  clear_steps       how long a disturbance lingers in the residual: the first lag at which the
                    score's autocorrelation falls below CLEAR_AUTOCORRELATION, within [3, 20]
  stillness_floor   per channel, STILLNESS_MARGIN x the smallest EMA of |dz| seen on validation;
                    left out (check off) when that smallest EMA is below STILLNESS_MIN_TYPICAL
                    of its median, i.e. when a still residual is normal for this sensor
The section also records how many alarms the tracker raises on the
validation stream with these settings, per 10,000 samples and per hour.
"""
from __future__ import annotations

import sys

import numpy as np

from edge_runtime.anomaly import AnomalySpec, AnomalyTracker, ema_step
from edge_runtime.model import Model
from edge_runtime.stream import forecast_stream

THRESHOLD_QUANTILE = 0.999
THRESHOLD_MARGIN = 1.5
THRESHOLD_FLOOR = 4.0
CLEAR_QUANTILE = 0.95
CLEAR_AUTOCORRELATION = 0.2
CLEAR_STEPS_RANGE = (3, 20)
STILLNESS_WINDOW = 16
STILLNESS_MARGIN = 0.5
STILLNESS_MIN_TYPICAL = 0.2
MIN_RESIDUALS = 4 * STILLNESS_WINDOW  # fewer validation residuals than this: no anomaly section


def validation_residuals(model: Model, val_raw: np.ndarray, warmup: int) -> np.ndarray:
    """(T, C) raw validation rows -> (T - warmup - 1, O) residuals in sensor units, warm-up left out.

    Row t's residual is the sample at t+1 minus the forecast made at t.
    """
    forecasts = forecast_stream(model.session(), val_raw)  # (T, O)
    actual = np.asarray(val_raw, np.float64)[1:, list(model.manifest.target)]  # (T-1, O)
    return (actual - forecasts[:-1])[warmup:]


def _clear_steps(score: np.ndarray) -> int:
    centred = score - score.mean()
    low, high = CLEAR_STEPS_RANGE
    variance = float(centred @ centred)
    if variance == 0:
        return low
    for lag in range(1, high + 1):
        if float(centred[:-lag] @ centred[lag:]) / variance < CLEAR_AUTOCORRELATION:
            return max(low, lag)
    return high


def _window_means(values: np.ndarray, window: int) -> np.ndarray:
    """(N, O) -> (N - window, O): the tracker's running average (ema_step) once it has a window of history."""
    mean, seen, out = np.zeros(values.shape[1]), 0, []
    for row in values:
        mean, seen = ema_step(mean, row, seen, window)
        if seen > window:
            out.append(mean)
    return np.asarray(out).reshape(-1, values.shape[1])


def calibrate(residuals: np.ndarray, period_s: float) -> dict:
    """(N, O) validation residuals in sensor units -> the manifest's anomaly section."""
    residuals = np.asarray(residuals, np.float64)
    if residuals.ndim != 2 or len(residuals) < MIN_RESIDUALS:
        raise ValueError(f"anomaly calibration needs at least {MIN_RESIDUALS} validation residuals, "
                         f"got {residuals.shape}")
    std = residuals.std(axis=0)  # (O,)
    std = np.where(std > 0, std, 1e-6)  # a perfectly predicted channel: any residual is news
    z = residuals / std  # (N, O)
    score = np.abs(z).max(axis=1)  # (N,)
    threshold = max(THRESHOLD_FLOOR, THRESHOLD_MARGIN * float(np.quantile(score, THRESHOLD_QUANTILE)))
    clear = min(threshold / 2, float(np.quantile(score, CLEAR_QUANTILE)))
    clear = max(clear, 1e-3)
    section = {"residual_std": std.tolist(), "threshold": threshold, "clear_threshold": clear,
               "clear_steps": _clear_steps(score), "stillness_window": STILLNESS_WINDOW}
    still = _window_means(np.abs(np.diff(z, axis=0)), STILLNESS_WINDOW)  # (M, O) EMA of |dz|
    smallest, typical = still.min(axis=0), np.median(still, axis=0)
    still_usable = bool(np.all(smallest >= STILLNESS_MIN_TYPICAL * typical) and np.all(smallest > 0))
    section["stillness_floor"] = (STILLNESS_MARGIN * smallest).tolist() if still_usable else None
    alarms = _count_alarms(section, residuals)
    section["calibration"] = {
        "source": "validation split, float32 step model run from a cold start, warm-up rows left out",
        "samples": len(residuals), "score_quantiles": {str(q): float(np.quantile(score, q))
                                                       for q in (0.5, 0.95, 0.99, THRESHOLD_QUANTILE)},
        "rule": f"threshold = max({THRESHOLD_FLOOR}, {THRESHOLD_MARGIN} x q{THRESHOLD_QUANTILE} of max|z|); "
                f"clear = min(threshold/2, q{CLEAR_QUANTILE}); clear_steps = autocorrelation < "
                f"{CLEAR_AUTOCORRELATION} in {list(CLEAR_STEPS_RANGE)}; stillness floor = {STILLNESS_MARGIN} x "
                f"smallest EMA of |dz| (off when < {STILLNESS_MIN_TYPICAL} x median)",
        "stillness_smallest_over_median": (smallest / np.maximum(typical, 1e-12)).tolist(),
        "validation_alarms": alarms,
        "validation_alarms_per_10k_samples": 1e4 * alarms / len(residuals),
        "validation_alarms_per_hour": alarms / (len(residuals) * period_s / 3600.0),
    }
    return section


def _count_alarms(section: dict, residuals: np.ndarray) -> int:
    floor = section["stillness_floor"]
    tracker = AnomalyTracker(AnomalySpec(tuple(section["residual_std"]), section["threshold"],
                                         section["clear_threshold"], section["clear_steps"],
                                         None if floor is None else tuple(floor), section["stillness_window"]))
    return sum(tracker.update(r)[1] == "start" for r in residuals)


def anomaly_section(model: Model, val_raw: np.ndarray, warmup: int, period_s: float) -> dict | None:
    """What convert writes as manifest["anomaly"]: calibrated on the validation split only.

    None (no anomaly scoring for this bundle, said on stderr) when validation is too short to calibrate.
    """
    residuals = validation_residuals(model, val_raw, warmup)
    if len(residuals) < MIN_RESIDUALS:
        print(f"warning: {model.manifest.path.name}: only {len(residuals)} validation residuals after the "
              f"warm-up, {MIN_RESIDUALS} needed to calibrate anomaly thresholds; the bundle gets none",
              file=sys.stderr)
        return None
    return calibrate(residuals, period_s)
