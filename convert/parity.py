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


def streaming_test_mse(model: Model, test_raw: np.ndarray, warmup: int, norm: dict) -> float:
    """Test-split MSE (normalized units) of the edge runtime fed raw samples, state never reset."""
    target = model.manifest.target
    predictions = forecast_stream(model.session(), test_raw)  # (T, O) raw units
    return mse(normalize_target(predictions, norm, target), normalize(test_raw, norm), target, warmup)
