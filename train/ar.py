"""AR(k) as a step model: a linear forecaster with named state, fitted by least squares.

The same contract as the recurrent forecasters (train/models.py): normalized
units, state by name, the forecast a correction to persistence in typical
one-step changes. Written in the change form, which is the step graph's:

    d_t = (x_t - x_{t-1}) * delta_gain                      (C,) typical changes
    correction_t = W_level x_t + W_delta [d_t, d_{t-1}, .., d_{t-m+1}] + b     (O,)
    y_t = x_t[target] + correction_t * output_gain          forecast of x_{t+1}

    state: x_prev (B, C) = x_{t-1};  lags (B, m C) = d_{t-1} .. d_{t-m}, newest first (the oldest is
    not read again: the lags are the regressors of the last step, see convert/ar_step.py); none when m = 1

With the level read, m = k - 1 and this is exactly AR(k) on the levels (train/baselines.py's AR,
reparametrized: x_{t-j} = x_t - sum of the j changes after it), fitted with the baseline's own
`fit_ar` and converted. With the change only (a wandering level), m = k: AR(k) on the changes.
A fresh stream starts with x_prev primed by its first sample and zero lags, i.e. a lag buffer
filled with the first reading, as the baseline's `lag_matrix` does.

Why changes in the state, not levels: the integer variants hold the state in int8, and the
level at int8 has steps as large as the change the model predicts (issue 13); the changes in
typical-change units fit int8 well, and x_prev stays outside the integer core as for every
forecaster.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from train.baselines import fit_ar
from train.config import ModelConfig
from train.features import primed_zero_state


class ARTerm(nn.Module):
    """The linear AR correction over the level and the last changes: the ar cell's whole model, and the
    highway beside a recurrent cell (rnn+ar, gru+ar, lstm+ar; train/models.py)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c, o, m = config.input_size, config.output_size, config.ar_changes
        if "level" in config.features:
            self.weight_level = nn.Parameter(torch.zeros(o, c))  # (O, C)
        self.weight_delta = nn.Parameter(torch.zeros(o, m * c))  # (O, m C), newest change first
        self.bias = nn.Parameter(torch.zeros(o))  # (O,)

    def forward(self, x: torch.Tensor, d: torch.Tensor, lags: torch.Tensor | None):
        """x (B, T, C) normalized, d (B, T, C) its changes in typical changes, lags (B, m C) or None (m = 1)
        -> correction (B, T, O) in typical changes, the new lags (B, m C) or None."""
        b, t, c = x.shape
        m = self.config.ar_changes
        held = torch.zeros(b, m * c) if lags is None else lags
        older = held.reshape(b, m, c)[:, :m - 1].flip(1)  # (B, m-1, C), oldest first; the oldest held drops out
        history = torch.cat([older, d], dim=1)  # (B, m-1+T, C)
        windows = history.unfold(1, m, 1).flip(-1)  # (B, T, C, m): newest change first
        regress = windows.permute(0, 1, 3, 2).reshape(b, t, m * c)  # (B, T, m C)
        correction = regress @ self.weight_delta.T + self.bias  # (B, T, O)
        if "level" in self.config.features:
            correction = correction + x @ self.weight_level.T
        return correction, None if lags is None else regress[:, -1]


class ARForecaster(nn.Module):
    """AR(k) with the Forecaster's interface: initial_state(first_x), forward(x, state) -> (y, state)."""

    def __init__(self, config: ModelConfig, scales):
        super().__init__()
        self.config = config
        self.ar = ARTerm(config)
        self.register_buffer("delta_gain", torch.tensor(scales.delta_gain, dtype=torch.float32))
        self.register_buffer("output_gain", torch.tensor(scales.output_gain, dtype=torch.float32))

    def initial_state(self, first_x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x_prev primed with the first sample (its change reads 0), zero lags. first_x: (B, C)."""
        return primed_zero_state(self.config, first_x)

    def forward(self, x: torch.Tensor, state: dict[str, torch.Tensor]):
        """x: (B, T, C) normalized -> y: (B, T, O) normalized forecast of x[t+1], new state."""
        previous = torch.cat([state["x_prev"][:, None, :], x[:, :-1, :]], dim=1)  # (B, T, C)
        correction, lags = self.ar(x, (x - previous) * self.delta_gain, state.get("lags"))  # (B, T, O)
        y = x[:, :, list(self.config.target)] + correction * self.output_gain  # (B, T, O)
        new_state = {"x_prev": x[:, -1, :]}
        if lags is not None:
            new_state["lags"] = lags
        return y, new_state


def ar_weights(config: ModelConfig, train_norm: np.ndarray, scales) -> dict[str, np.ndarray]:
    """Least squares on the training split (normalized), in the step form's weights (float64).

    Level read: the baseline's AR(k) on the levels, B_j (C, O) for x_{t-j}, rewritten as
    correction = a + (sum_j B_j - E) x_t - sum_i (sum_{j>i} B_j) dx_{t-i}. Change only: AR(k)
    fitted on the changes, dx_{t+1} = a + sum_i B_i dx_{t-i}."""
    c, target = config.input_size, config.target
    k = config.ar_order
    delta_gain = np.asarray(scales.delta_gain, np.float64)  # (C,)
    output_gain = np.asarray(scales.output_gain, np.float64)  # (O,)
    weights = {}  # the ARTerm's, named as in the model's state_dict ("ar.")
    if "level" in config.features:
        coef = fit_ar(train_norm, target, k).coef  # (k C + 1, O)
        b = coef[:-1].reshape(k, c, -1)  # (k, C, O)
        select = np.zeros_like(b[0])
        select[list(target), np.arange(len(target))] = 1.0  # E: x_t[target]
        weights["ar.weight_level"] = ((b.sum(axis=0) - select) / output_gain).T  # (O, C)
        phi = -np.cumsum(b[::-1], axis=0)[::-1][1:]  # (k-1, C, O): phi_i = -sum_{j>i} B_j
    else:
        coef = fit_ar(np.diff(train_norm, axis=0), target, k).coef  # (k C + 1, O) on the changes
        phi = coef[:-1].reshape(k, c, -1)  # (k, C, O)
    scaled = phi / delta_gain[None, :, None] / output_gain[None, None, :]  # per change in typical changes
    weights["ar.weight_delta"] = scaled.reshape(-1, scaled.shape[-1]).T  # (O, m C), newest first
    weights["ar.bias"] = coef[-1] / output_gain  # (O,)
    return weights


def predict_normalized(weights: dict, config: ModelConfig, values_norm: np.ndarray) -> np.ndarray:
    """numpy, float64, the step form run over a stream from a cold start: (T, C) -> (T, O) normalized."""
    x = np.asarray(values_norm, np.float64)
    gain = np.asarray(weights["delta_gain"], np.float64)
    m, c = config.ar_changes, config.input_size
    d = np.diff(x, axis=0, prepend=x[:1]) * gain  # (T, C); the first change reads 0
    padded = np.concatenate([np.zeros((m - 1, c)), d])  # zero lags before the start
    regress = np.concatenate([padded[m - 1 - i: m - 1 - i + len(x)] for i in range(m)], axis=1)  # (T, m C)
    correction = (regress @ np.asarray(weights["ar.weight_delta"], np.float64).T
                  + np.asarray(weights["ar.bias"], np.float64))
    if "level" in config.features:
        correction += x @ np.asarray(weights["ar.weight_level"], np.float64).T
    return x[:, list(config.target)] + correction * np.asarray(weights["output_gain"], np.float64)
