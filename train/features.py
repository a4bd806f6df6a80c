"""What every forecaster reads per step (train/models.py, train/transformer.py, train/ar.py): the level and/or the
change; and the state every forecaster starts a stream from."""
from __future__ import annotations

import torch

from train.config import ModelConfig


def input_features(config: ModelConfig, delta_gain: torch.Tensor, x: torch.Tensor,
                   x_prev: torch.Tensor | None) -> torch.Tensor:
    """What every forecaster reads per step: x (B, T, C) normalized levels -> (B, T, C * n_features),
    the level and/or the change since the previous sample in typical changes (x_prev (B, C) before x[:, 0])."""
    parts = []
    if "level" in config.features:
        parts.append(x)
    if "delta" in config.features:
        previous = torch.cat([x_prev[:, None, :], x[:, :-1, :]], dim=1)  # (B, T, C)
        parts.append((x - previous) * delta_gain)
    return torch.cat(parts, dim=-1)


def primed_zero_state(config: ModelConfig, first_x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The contract's zero state, with x_prev primed to the first sample so its change reads 0. first_x: (B, C)."""
    state = {n: torch.zeros(shape) for n, shape in config.state_shapes(first_x.shape[0]).items()}
    if "x_prev" in state:
        state["x_prev"] = first_x.detach().clone()
    return state
