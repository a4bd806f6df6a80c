"""A per-channel gain on the forecaster's correction, fitted on validation after training.

The model forecasts y = x[target] + correction (normalized units). On a channel
whose changes the model cannot predict (a bike's cadence, a short seismogram),
a full-size correction that is mostly noise costs more than it wins, and the
model ends above persistence. After training (early stopping already picked
the epoch on validation), each target channel c gets a gain

    alpha_c = <change_c, correction_c> / <correction_c, correction_c>   clipped to [0, 1]

the least-squares shrinkage of the correction towards persistence on the
validation split (change = x[t+1] - x[t], scored from the same warm-up as the
validation MSE). alpha = 0 is exactly persistence on that channel, alpha = 1 the
model as trained. A gain is kept only when it lowers that channel's validation
MSE by at least TrainConfig.gain_margin of it (an in-sample fit of one number always lowers
it a little); otherwise the channel keeps 1.

The gain is folded into the head's weights and bias (row c times alpha_c): the
head feeds nothing back into the recurrence, so the folded model is the same
function with the correction scaled, and every graph, calibration and runtime
downstream sees the scaled head with no change of their own. The test split is
never read here.
"""
from __future__ import annotations

import numpy as np
import torch

from train.models import Forecaster
from train.trainer import TrainConfig, stream_forecast

GAIN_MARGIN = TrainConfig.gain_margin


def fit_gains(change: np.ndarray, correction: np.ndarray, margin: float = GAIN_MARGIN) -> dict:
    """change, correction: (T, O) true next-step change and the model's correction, normalized units.

    -> {"alpha": [O], "fitted": [O] (before the margin rule), "val_mse_before": [O], "val_mse_after": [O],
        "kept": [O] bool, "margin": margin}; alpha is 1.0 where the fitted gain is not kept."""
    change, correction = np.asarray(change, np.float64), np.asarray(correction, np.float64)
    power = np.sum(correction ** 2, axis=0)  # (O,)
    fitted = np.where(power > 0, np.sum(change * correction, axis=0) / np.where(power > 0, power, 1.0), 1.0)
    fitted = np.clip(fitted, 0.0, 1.0)
    before = np.mean((change - correction) ** 2, axis=0)
    shrunk = np.mean((change - fitted * correction) ** 2, axis=0)
    kept = (shrunk <= (1.0 - margin) * before) & (margin < 1.0)  # margin >= 1: keep the head as trained
    alpha = np.where(kept, fitted, 1.0)
    return {"alpha": alpha.tolist(), "fitted": fitted.tolist(), "val_mse_before": before.tolist(),
            "val_mse_after": np.where(kept, shrunk, before).tolist(), "kept": kept.tolist(), "margin": margin}


def validation_change_and_correction(model: Forecaster, val_norm: np.ndarray, warmup: int):
    """The validation stream from a cold start, as the validation MSE scores it: (change, correction), (T, O)."""
    target = list(model.config.target)
    y = stream_forecast(model, val_norm)[warmup:-1]  # (T, O) forecasts of x[t+1]
    now = val_norm[warmup:-1, target]
    return val_norm[warmup + 1:, target] - now, y - now


def fold_gains(model: Forecaster, alpha) -> None:
    """Scale the head's output rows by alpha (O,), in place: correction_c -> alpha_c * correction_c. With an
    AR highway beside the cell (rnn+ar, gru+ar, lstm+ar) the correction is head + AR term: both are scaled."""
    a = torch.as_tensor(np.asarray(alpha, np.float32))  # (O,)
    with torch.no_grad():
        model.head.weight.mul_(a[:, None])  # (O, H)
        model.head.bias.mul_(a)  # (O,)
        if model.config.has_ar:
            for weight in model.ar.parameters():  # weight_level (O, C), weight_delta (O, mC), bias (O,)
                weight.mul_(a[:, None] if weight.dim() == 2 else a)


def fit_and_fold(model: Forecaster, val_norm: np.ndarray, warmup: int, margin: float = GAIN_MARGIN) -> dict:
    """Fit the gains on validation, fold them into the model's head, return the record for metrics.json.
    AR(k) alone (the ar cell) keeps its least-squares fit: it is the baseline the search holds as a candidate."""
    if not hasattr(model, "head"):
        return {"skipped": "AR(k) alone keeps its least-squares fit", "margin": margin}
    change, correction = validation_change_and_correction(model, val_norm, warmup)
    gains = fit_gains(change, correction, margin)
    fold_gains(model, gains["alpha"])
    return gains
