"""Parity checks at the torch -> TFLite boundary, run the way the device runs."""
from __future__ import annotations

import numpy as np

from edge_runtime.session import Model
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
DRIFT_LIMIT = 1.5  # last-10% deviation at most this multiple of the first-10% deviation


def whole_stream(splits) -> np.ndarray:
    """Train, validation and test as the one continuous stream they were cut from: (T, C) raw."""
    w = int(splits["warmup"])
    return np.concatenate([splits["train"], splits["val"][w:], splits["test"][w:]])


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values ** 2)))


def variant_metrics(torch_model: Forecaster, model: Model, splits, norm: dict, float_test_mse: float) -> dict:
    """How a variant does on the stream, run step by step on the runtime with state carried.

    test_mse:   next-sample MSE on the test split (normalized units), warm-up excluded
    mse_ratio:  test_mse / the float32 torch model's test_mse
    max_abs_error_vs_float: largest deviation from the float32 torch model on the test split
    drift:      RMS deviation from the float32 torch model over the last 10% of a stream of up
                to 20,000 steps vs the first 10%; (last + floor) / (first + floor)
    """
    target = model.manifest.target
    warmup = int(splits["warmup"])
    test_raw = splits["test"]
    test_norm = normalize(test_raw, norm)
    predicted = normalize_target(forecast_stream(model.session(), test_raw), norm, target)  # (T, O)
    reference = stream_forecast(torch_model, test_norm)  # (T, O)
    test_mse = mse(predicted, test_norm, target, warmup)

    stream = whole_stream(splits)[:DRIFT_STEPS]
    deviation = np.abs(normalize_target(forecast_stream(model.session(), stream), norm, target)
                       - stream_forecast(torch_model, normalize(stream, norm))).max(axis=1)  # (T,)
    tenth = len(deviation) // 10
    first, last = _rms(deviation[:tenth]), _rms(deviation[-tenth:])
    drift_ratio = (last + DRIFT_FLOOR) / (first + DRIFT_FLOOR)
    return {
        "test_mse": test_mse,
        "mse_ratio": test_mse / float_test_mse,
        "max_abs_error_vs_float": float(np.abs(predicted - reference)[warmup:].max()),
        "drift": {"steps": len(stream), "first_10pct_rms": first, "last_10pct_rms": last,
                  "ratio": drift_ratio, "floor": DRIFT_FLOOR},
        "backend": model.backend,
    }
