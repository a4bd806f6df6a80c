"""Recurrent forecasters: Elman RNN, GRU and LSTM behind one interface.

The cell type is a string in the config; this file is the one place that
knows how the cells differ (which state tensors they carry). Every model
works in normalized units and carries its state explicitly, by name:

    x_prev   (B, C)  the previous normalized input, for the delta feature
    h0, h1.. (B, H)  hidden state per layer
    c0, c1.. (B, H)  LSTM cell state per layer

The forecast is a correction on top of persistence: y = x[target] + head(h)
scaled to the size of a typical one-step change. That makes an untrained
model exactly the persistence baseline and keeps the head's output O(1).
A "+ar" cell (lstm+ar, ...) adds an AR(k) term to the correction, LSTNet's
linear highway (train/ar.py); its lag register is one more state tensor, lags.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from train.config import CELL_NAMES, FEATURES, ModelConfig  # noqa: F401  (re-exported)
from train.config import AR_CELL, TRANSFORMER_CELL
from train.features import input_features, primed_zero_state
from train.config import CELLS as CELL_SPECS

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
assert set(CELLS) == set(CELL_NAMES)


def run_stack(rnn: nn.Module, cell: str, layers: int, x: torch.Tensor, state: dict[str, torch.Tensor]):
    """The stacked torch cells over (B, T, F) with named state: -> out (B, T, H), new {h0.., c0..}.

    Packs the named state into what nn.RNN/GRU (h (L, B, H)) or nn.LSTM ((h, c)) take, and back:
    the one place the two state layouts meet, for the forecaster and the autocomplete model alike.
    """
    kinds = CELL_SPECS[cell].state  # ("h",) or ("h", "c")
    packed = [torch.stack([state[f"{kind}{i}"] for i in range(layers)]) for kind in kinds]  # each (L, B, H)
    out, new = rnn(x, packed[0] if len(packed) == 1 else tuple(packed))
    new = new if isinstance(new, tuple) else (new,)
    return out, {f"{kind}{i}": tensor[i] for kind, tensor in zip(kinds, new) for i in range(layers)}


@dataclass(frozen=True)
class Scales:
    """Fixed constants derived from the training split's normalization.

    delta_gain:  (C,)  turns a change in normalized level into unit variance
    output_gain: (O,)  turns the head's unit-variance output into normalized level
    """

    delta_gain: list[float]
    output_gain: list[float]

    @classmethod
    def from_normalization(cls, norm: dict, target: tuple[int, ...]) -> "Scales":
        std, dstd = norm["std"], norm["delta_std"]
        return cls(delta_gain=[s / d for s, d in zip(std, dstd)],
                   output_gain=[dstd[i] / std[i] for i in target])


class Forecaster(nn.Module):
    """Many-to-one next-value forecaster, run many-to-many over a chunk."""

    def __init__(self, config: ModelConfig, scales: Scales):
        super().__init__()
        self.config = config
        n_features = config.input_size * len(config.features)
        self.rnn = CELLS[config.recurrent_cell](n_features, config.hidden, config.layers, batch_first=True)
        self.head = nn.Linear(config.hidden, config.output_size)
        if config.has_ar:  # rnn+ar, gru+ar, lstm+ar: LSTNet's linear highway beside the cell (train/ar.py)
            from train.ar import ARTerm

            self.ar = ARTerm(config)
        self.register_buffer("delta_gain", torch.tensor(scales.delta_gain, dtype=torch.float32))
        self.register_buffer("output_gain", torch.tensor(scales.output_gain, dtype=torch.float32))

    def initial_state(self, first_x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Zero state, with x_prev primed to the first sample so its delta is 0. first_x: (B, C)."""
        return primed_zero_state(self.config, first_x)

    def features(self, x: torch.Tensor, x_prev: torch.Tensor | None) -> torch.Tensor:
        return input_features(self.config, self.delta_gain, x, x_prev)

    def forward(self, x: torch.Tensor, state: dict[str, torch.Tensor]):
        """x: (B, T, C) normalized -> y: (B, T, O) normalized forecast of x[t+1], new state."""
        cfg = self.config
        feats = self.features(x, state.get("x_prev"))  # (B, T, F)
        out, new_state = run_stack(self.rnn, cfg.recurrent_cell, cfg.layers, feats, state)  # out: (B, T, H)
        correction = self.head(out)  # (B, T, O) typical changes
        if cfg.has_ar:  # the highway reads the changes the delta feature does: (x - previous) * delta_gain
            previous = torch.cat([state["x_prev"][:, None, :], x[:, :-1, :]], dim=1)  # (B, T, C)
            ar, lags = self.ar(x, (x - previous) * self.delta_gain, state.get("lags"))  # (B, T, O)
            correction = correction + ar
            if lags is not None:
                new_state["lags"] = lags
        y = x[:, :, list(cfg.target)] + correction * self.output_gain  # (B, T, O)
        if "x_prev" in state:
            new_state["x_prev"] = x[:, -1, :]
        return y, new_state


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_forecaster(config: ModelConfig, scales: Scales) -> nn.Module:
    """The model for a config: a Forecaster (recurrent, with or without an AR highway), an ARForecaster
    (train/ar.py) or a TransformerForecaster (train/transformer.py), all with the same interface."""
    if config.cell == AR_CELL:
        from train.ar import ARForecaster

        return ARForecaster(config, scales)
    if config.cell == TRANSFORMER_CELL:
        from train.transformer import TransformerForecaster

        return TransformerForecaster(config, scales)
    return Forecaster(config, scales)


def forecaster_from_weights(weights: dict, info: dict) -> nn.Module:
    """Rebuild a trained model from a checkpoint's (weights, info); no training code runs."""
    config = ModelConfig.from_dict(info["model"])
    model = make_forecaster(config, Scales.from_normalization(info["normalization"], config.target))
    model.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    return model.eval()
