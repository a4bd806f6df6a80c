"""The simulated firmware loop: read the ADC, check the sample, step the model, snapshot, survive resets.

Per tick, in order:
1. dropout: no sample arrived -> flag, hold the state and the forecast;
2. range: a code at either ADC rail -> flag "saturation", do not feed it;
3. stuck: the same code `STUCK_RUN` times in a row on a channel whose noise
   alone changes the code most ticks -> flag "stuck", do not feed it;
   jump: a sample-to-sample change above JUMP_LIMIT times the RMS change
   measured during commissioning, on any channel (input-only channels
   included, which the residual cannot see) -> flag "jump", do not feed it;
4. residual: the sample minus the forecast made one tick earlier, scored by
   edge_runtime.anomaly's tracker (the service's contract; its residual
   spread is the larger of the bundle's and the RMS residual this variant
   showed during the first COMMISSIONING ticks, because a quantized variant
   forecasts worse than the float model the bundle measured) -> an alarm start
   flags "residual"; up to MAX_REJECTED outlying samples in a row are held
   back from the model so a spike does not enter the state, after that the
   firmware accepts the new level;
5. drift: an exponentially weighted mean of the residual's z score leaves
   +-DRIFT_LIMIT -> flag "drift" (a slow bias the per-sample check misses);
6. step the model; every `snapshot_every` ticks copy the state to flash.

A watchdog reset at tick R loses the samples that arrive while the device
boots, then restores the state from the last snapshot in flash (re-priming
x_prev from the first new reading) and carries on. Its cost is measured against the same firmware run without the reset.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge_runtime.anomaly import AnomalySpec, AnomalyTracker
from firmware_sim.device_model import DeviceModel
from firmware_sim.sensor import Adc, SensorTrace

STUCK_RUN = 12  # identical codes in a row; with 1 LSB rms noise a healthy channel repeats a code ~28% of ticks
MAX_REJECTED = 3
DRIFT_ALPHA, DRIFT_LIMIT = 0.01, 1.0  # EWMA weight; |mean z| limit (white z gives an EWMA std of ~0.07)
DEFAULT_THRESHOLD = 6.0  # residual z that starts an alarm when the bundle has no anomaly section
DETECTION_GRACE = 50  # ticks after a fault's end in which a flag still counts as catching it
JUMP_LIMIT = 8.0  # sample-to-sample change, in commissioned RMS changes
COMMISSIONING = 250  # fault-free ticks at start-up in which the firmware measures its own residual spread


def anomaly_spec(model: DeviceModel, measured_rms: np.ndarray | None = None) -> AnomalySpec:
    """The bundle's anomaly section (or one built from its validation residual spread), with the
    residual spread raised to what this variant measured during commissioning."""
    spec = AnomalySpec.from_manifest(model.manifest)
    if spec is None:
        target = list(model.manifest.target)
        residual_std = np.asarray(model.manifest.raw["residual_std"], np.float64) * np.asarray(model.std)[target]
        spec = AnomalySpec(tuple(float(s) for s in residual_std), DEFAULT_THRESHOLD, DEFAULT_THRESHOLD / 2, 3)
    if measured_rms is not None:
        spread = np.maximum(np.asarray(spec.residual_std), measured_rms)
        spec = AnomalySpec(tuple(float(s) for s in spread), spec.threshold, spec.clear_threshold, spec.clear_steps)
    return spec


@dataclass
class FirmwareRun:
    forecasts: np.ndarray  # (T, O) forecast made at tick k for tick k+1 (NaN while booting)
    scores: np.ndarray  # (T,) residual z score (NaN when not computed)
    flags: list  # per tick: list of flag names
    fed: np.ndarray  # (T,) bool, the sample went into the model
    snapshots: int
    reset_at: int | None
    restored_from: int | None  # tick of the snapshot the reset restored
    boot_ticks: int
    flag_ticks: dict = field(default_factory=dict)  # flag name -> list of ticks


def run_firmware(model: DeviceModel, trace: SensorTrace, adc: Adc, snapshot_every: int,
                 reset_at: int | None = None, boot_ticks: int = 0) -> FirmwareRun:
    steps, target = trace.readings.shape[0], list(model.manifest.target)
    spec = anomaly_spec(model)
    tracker = AnomalyTracker(spec)
    inverse_std = 1.0 / np.asarray(spec.residual_std)
    commissioning: list[np.ndarray] = []  # residuals of the first ticks, to measure this variant's spread
    changes: list[np.ndarray] = []  # sample-to-sample changes of the first ticks, per channel
    jump_rms, previous = None, None
    model.reset()
    forecasts = np.full((steps, len(target)), np.nan)
    scores = np.full(steps, np.nan)
    flags: list[list[str]] = [[] for _ in range(steps)]
    fed = np.zeros(steps, bool)
    forecast, last_code, run_length = None, None, np.zeros(adc.low.size, np.int64)
    rejected, drift_mean, flash, snapshots, restored_from = 0, 0.0, None, 0, None
    booting_until = -1
    for k in range(steps):
        if reset_at is not None and k == reset_at:
            booting_until = k + boot_ticks  # samples during the boot are lost
            tracker.reset()
            if flash is not None:
                model.restore(flash["model"])
                # the snapshot's x_prev is a stale sample: re-prime it from the first reading after boot,
                # as a fresh start does, so the first change the model sees is 0, not the drift since
                model.steps = 0
                # and its forecast was for a sample long gone: do not score the first reading against it
                forecast, restored_from = None, flash["tick"]
            else:
                model.reset()
                forecast = None
        if k < booting_until:
            continue
        reading, codes = trace.readings[k], trace.codes[k]
        if np.isnan(reading).any():
            flags[k].append("dropout")
            forecasts[k] = forecast if forecast is not None else np.nan
            continue
        suspect = False
        if ((codes <= 0) | (codes >= adc.top)).any():
            flags[k].append("saturation")
            suspect = True
        run_length = np.where(codes == last_code, run_length + 1, 1) if last_code is not None else run_length + 1
        last_code = codes.copy()
        if (run_length >= STUCK_RUN).any():
            flags[k].append("stuck")
            suspect = True
        if previous is not None:
            change = np.abs(reading - previous)  # (C,)
            if jump_rms is None:
                changes.append(change)
            elif (change > JUMP_LIMIT * jump_rms).any():
                flags[k].append("jump")
                suspect = True
        previous = reading.copy()
        if k < COMMISSIONING:  # no scoring yet: learn this variant's residual spread
            if forecast is not None and k >= 10:
                commissioning.append(reading[target] - forecast)  # (O,)
            if k == COMMISSIONING - 1:
                jump_rms = np.maximum(np.sqrt(np.mean(np.square(changes), axis=0)), adc.lsb)  # (C,)
            if k == COMMISSIONING - 1 and len(commissioning) >= 20:
                spec = anomaly_spec(model, np.sqrt(np.mean(np.square(commissioning), axis=0)))
                tracker, inverse_std = AnomalyTracker(spec), 1.0 / np.asarray(spec.residual_std)
        elif forecast is not None:
            residual = reading[target] - forecast  # (O,)
            score, event = tracker.update(residual)
            scores[k] = score
            if event == "start":
                flags[k].append("residual")
            z = float(np.mean(residual * inverse_std))
            drift_mean = (1 - DRIFT_ALPHA) * drift_mean + DRIFT_ALPHA * z
            if abs(drift_mean) > DRIFT_LIMIT:
                flags[k].append("drift")
            if score > spec.threshold and rejected < MAX_REJECTED:
                suspect = True
        if suspect:
            rejected += 1
            forecasts[k] = forecast if forecast is not None else np.nan
            continue
        rejected = 0
        forecast = model.step(reading)
        forecasts[k], fed[k] = forecast, True
        if snapshot_every and k % snapshot_every == 0:
            flash = {"model": model.snapshot(), "tick": k}  # written atomically (A/B pages)
            snapshots += 1
    flag_ticks: dict[str, list[int]] = {}
    for k, names in enumerate(flags):
        for name in names:
            flag_ticks.setdefault(name, []).append(k)
    return FirmwareRun(forecasts, scores, flags, fed, snapshots, reset_at, restored_from, boot_ticks, flag_ticks)


def detections(run: FirmwareRun, trace: SensorTrace) -> list[dict]:
    """Per injected fault: the first flag inside [start, end + grace), its kind and delay in ticks."""
    found = []
    for f in trace.faults:
        hit = next(((k, name) for k in range(f.start, min(f.end + DETECTION_GRACE, len(run.flags)))
                    for name in run.flags[k]), None)
        found.append({**f.to_dict(), "flagged": hit is not None, "flag": hit[1] if hit else None,
                      "delay_ticks": (hit[0] - f.start) if hit else None})
    return found


def false_flags(run: FirmwareRun, trace: SensorTrace) -> int:
    covered = np.zeros(len(run.flags), bool)
    for f in trace.faults:
        covered[f.start:f.end + DETECTION_GRACE] = True
    if run.reset_at is not None:
        covered[run.reset_at:run.reset_at + run.boot_ticks + DETECTION_GRACE] = True
    return sum(1 for k, names in enumerate(run.flags) if names and not covered[k])


def forecast_error(run: FirmwareRun, trace: SensorTrace, target: list[int]) -> dict:
    """MSE of each forecast against the true (fault-free) next value, over ticks away from faults."""
    truth = trace.true[1:, target]  # (T-1, O)
    made = run.forecasts[:-1]  # forecast at k for k+1
    clean = np.ones(len(truth), bool)
    for f in trace.faults:
        clean[max(0, f.start - 1):f.end + DETECTION_GRACE] = False
    valid = clean & ~np.isnan(made).any(axis=1)
    error = made[valid] - truth[valid]
    persistence = trace.true[:-1, target][valid] - truth[valid]
    return {"mse": float(np.mean(error ** 2)) if valid.any() else None,
            "persistence_mse": float(np.mean(persistence ** 2)) if valid.any() else None,
            "ticks_scored": int(valid.sum())}


def reset_cost(with_reset: FirmwareRun, without: FirmwareRun, window: int = 500) -> dict:
    """How far the forecasts after a reset are from an uninterrupted run's, tick by tick."""
    start = with_reset.reset_at + with_reset.boot_ticks
    a, b = with_reset.forecasts[start:start + window], without.forecasts[start:start + window]
    diff = np.abs(a - b).max(axis=1)  # (window,)
    diff = np.where(np.isnan(diff), 0.0, diff)
    settled = np.flatnonzero(diff > 1e-6)
    return {"reset_at": with_reset.reset_at, "boot_ticks": with_reset.boot_ticks,
            "restored_snapshot_tick": with_reset.restored_from,
            "stale_ticks": (with_reset.reset_at - with_reset.restored_from) if with_reset.restored_from is not None
            else None,
            "max_abs_deviation": float(diff.max()) if diff.size else 0.0,
            "mean_abs_deviation_first_100": float(diff[:100].mean()) if diff.size else 0.0,
            "ticks_until_identical": int(settled[-1] + 1) if settled.size else 0,
            "deviation": diff}
