"""Parity checks at the torch -> TFLite boundary, run the way the device runs."""
from __future__ import annotations

import numpy as np

from edge_runtime.model import Model
from edge_runtime.stream import forecast_stream
from train.baselines import mse
from train.models import Forecaster
from train.trainer import normalize, stream_forecast


def normalize_target(values: np.ndarray, norm: dict, target) -> np.ndarray:
    """(T, O) raw forecasts of the target channels -> normalized units."""
    idx = list(target)
    return (values - np.asarray(norm["mean"])[idx]) / np.asarray(norm["std"])[idx]


def parity_stream(splits) -> np.ndarray:
    """Validation then test as one continuous stream (they overlap by the warm-up): (T, C) raw."""
    return np.concatenate([splits["val"], splits["test"][int(splits["warmup"]):]])


def streaming_parity(torch_model: Forecaster, model: Model, raw: np.ndarray, norm: dict, steps: int) -> dict:
    """Torch over the whole sequence at once vs TFLite one step at a time, state fed back.

    Compared in normalized units at every step of the first `steps` samples of
    `raw` (T, C), or all of it when shorter; the report says how many steps ran.
    """
    x = normalize(raw[:steps], norm)  # (T, C)
    reference = stream_forecast(torch_model, x)  # (T, O) normalized
    streamed = normalize_target(forecast_stream(model.session(), raw[:steps]), norm, model.manifest.target)
    error = np.abs(streamed - reference)
    return {"steps": len(x), "max_abs_error": float(error.max()), "mean_abs_error": float(error.mean()),
            "worst_step": int(error.max(axis=1).argmax()), "backend": model.backend}


DRIFT_STEPS = 20000
DRIFT_FLOOR = 1e-4  # normalized units: the float parity tolerance; below it a deviation is rounding
DRIFT_LIMIT = 1.5  # long-running deviation at most this multiple of a fresh start's on the same samples
DRIFT_WARMUP = 256  # steps a fresh session runs before its deviation counts


def whole_stream(splits) -> np.ndarray:
    """Train, validation and test as the one continuous stream they were cut from: (T, C) raw."""
    w = int(splits["warmup"])
    return np.concatenate([splits["train"], splits["val"][w:], splits["test"][w:]])


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values ** 2)))


def _deviation(torch_model: Forecaster, model: Model, raw: np.ndarray, norm: dict) -> np.ndarray:
    """(T, C) raw, both models started cold -> (T, O) |variant - float32 torch| in normalized units."""
    streamed = normalize_target(forecast_stream(model.session(), raw), norm, model.manifest.target)
    return np.abs(streamed - stream_forecast(torch_model, normalize(raw, norm)))


def drift_check(torch_model: Forecaster, model: Model, stream: np.ndarray, norm: dict) -> dict:
    """Long-running vs freshly started deviation on the same last 10% of `stream` (T, C) raw."""
    tenth = len(stream) // 10
    start = len(stream) - tenth
    warm = min(DRIFT_WARMUP, start)
    long_run = _rms(_deviation(torch_model, model, stream, norm)[start:])
    fresh = _rms(_deviation(torch_model, model, stream[start - warm:], norm)[warm:])
    return {"steps": len(stream), "scored_steps": tenth, "long_run_rms": long_run, "fresh_start_rms": fresh,
            "ratio": (long_run + DRIFT_FLOOR) / (fresh + DRIFT_FLOOR), "floor": DRIFT_FLOOR,
            "fresh_warmup": warm}


def variant_metrics(torch_model: Forecaster, model: Model, splits, norm: dict, float_test_mse: float) -> dict:
    """How a variant does on the stream, run step by step on the runtime with state carried.

    test_mse:   next-sample MSE on the test split (normalized units), warm-up excluded
    mse_ratio:  test_mse / the float32 torch model's test_mse
    max_abs_error_vs_float: largest deviation from the float32 torch model on the test split
    drift:      does error build up in the state? Over the last 10% of a stream of up to 20,000
                steps, the RMS deviation from the float32 torch model of a session that ran the
                whole stream, vs that of a session started fresh 256 steps before the same
                samples (each against a torch model run the same way): (long + floor) /
                (fresh + floor). Comparing on the same samples keeps a change of regime (the
                vibration motor going idle or under load) from reading as drift; an earlier
                first-10% vs last-10% check flagged such changes both ways.
    """
    target = model.manifest.target
    warmup = int(splits["warmup"])
    test_raw = splits["test"]
    test_norm = normalize(test_raw, norm)
    predicted = normalize_target(forecast_stream(model.session(), test_raw), norm, target)  # (T, O)
    reference = stream_forecast(torch_model, test_norm)  # (T, O)
    test_mse = mse(predicted, test_norm, target, warmup)

    stream = whole_stream(splits)[:DRIFT_STEPS]
    drift = drift_check(torch_model, model, stream, norm)
    return {
        "test_mse": test_mse,
        "mse_ratio": test_mse / float_test_mse,
        "max_abs_error_vs_float": float(np.abs(predicted - reference)[warmup:].max()),
        "drift": drift,
        "backend": model.backend,
    }
