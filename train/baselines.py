"""Baselines every model must beat or match, scored on exactly the same targets.

persistence: x[t+1] = x[t]
AR(k):       x[t+1] = a + sum_j B_j x[t-j], j < k, least squares on the
             training split over the lags of every input channel; k is
             chosen on the validation split.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AR_ORDERS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def lag_matrix(values: np.ndarray, k: int) -> np.ndarray:
    """values: (T, C) -> (T, k*C + 1); row t holds x[t], x[t-1] .. x[t-k+1], 1.

    Rows before the first full window repeat the first sample, as a device
    that has just started would (its lag buffer is primed with the first read).
    """
    padded = np.concatenate([np.repeat(values[:1], k - 1, axis=0), values], axis=0)  # (T+k-1, C)
    n = len(values)
    lags = [padded[k - 1 - j: k - 1 - j + n] for j in range(k)]  # each (T, C)
    return np.concatenate(lags + [np.ones((n, 1), values.dtype)], axis=1)


@dataclass
class ARModel:
    order: int
    coef: np.ndarray  # (k*C + 1, O)

    def predict(self, values: np.ndarray) -> np.ndarray:
        """values: (T, C) -> (T, O) forecasts of the target channels at t+1."""
        return lag_matrix(values.astype(np.float64), self.order) @ self.coef


def fit_ar(train: np.ndarray, target: tuple[int, ...], order: int) -> ARModel:
    x = lag_matrix(train.astype(np.float64), order)[order - 1:-1]  # full windows only
    y = train[order:, list(target)].astype(np.float64)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return ARModel(order, coef)


def persistence(values: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    return values[:, list(target)]


def mse(prediction: np.ndarray, values: np.ndarray, target: tuple[int, ...], start: int) -> float:
    """Mean squared error of forecasts made at t >= start against values[t+1]."""
    truth = values[start + 1:, list(target)]
    return float(np.mean((prediction[start:-1] - truth) ** 2))


def select_ar(train: np.ndarray, val_stream: np.ndarray, val_start: int,
              target: tuple[int, ...]) -> tuple[ARModel, dict[int, float]]:
    """Fit AR(k) for each candidate order on train, pick the best on validation."""
    scores, models = {}, {}
    for k in AR_ORDERS:
        if k * train.shape[1] + 1 >= len(train) // 2:
            break
        models[k] = fit_ar(train, target, k)
        scores[k] = mse(models[k].predict(val_stream), val_stream, target, val_start)
    best = min(scores, key=scores.get)
    return models[best], scores
