"""Next-character model for autocomplete: a stacked RNN/GRU/LSTM over one-hot symbols.

The lecture's second exercise: one-hot letters into a stacked LSTM (its
"MultiCell"), predicting the next letter with sparse softmax cross-entropy,
many-to-many. The cell type is a string in the config and goes through the
same `CELLS` table as the sensor forecasters; the module names (`rnn`,
`head`) match theirs so the converter reads both with the same code.

A word is fed as  ^ w o r d  and trained to predict  w o r d $ :
start symbol in, end symbol out. State is explicit and named like the
forecasters' (h0, h1, c0, c1), each (B, H).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from train.config import AutocompleteModelConfig
from train.models import CELLS, run_stack


class AutocompleteNet(nn.Module):
    def __init__(self, config: AutocompleteModelConfig, dropout: float = 0.0, layer_dropout: float = 0.0):
        super().__init__()
        self.config = config
        # layer_dropout: torch's own dropout on each layer's output but the last (training only; a one-layer
        # stack has no such output, and torch warns when asked)
        between = layer_dropout if config.layers > 1 else 0.0
        self.rnn = CELLS[config.cell](config.vocab_size, config.hidden, config.layers, batch_first=True,
                                      dropout=between)
        self.drop = nn.Dropout(dropout)  # training only (identity in eval): no weights, nothing to convert
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def initial_state(self, batch: int) -> dict[str, torch.Tensor]:
        return {n: torch.zeros(shape) for n, shape in self.config.state_shapes(batch).items()}

    def forward(self, symbols: torch.Tensor, state: dict[str, torch.Tensor] | None = None):
        """symbols: (B, T) indices -> logits (B, T, V) for the symbol after each, new state."""
        cfg = self.config
        state = state if state is not None else self.initial_state(symbols.shape[0])
        x = F.one_hot(symbols, cfg.vocab_size).float()  # (B, T, V): what the device feeds, too
        out, new_state = run_stack(self.rnn, cfg.cell, cfg.layers, x, state)  # out: (B, T, H)
        return self.head(self.drop(out)), new_state  # (B, T, V)


def autocomplete_net_from_weights(weights: dict, info: dict) -> AutocompleteNet:
    """Rebuild a trained model from a checkpoint's (weights, info); no training code runs."""
    model = AutocompleteNet(AutocompleteModelConfig.from_dict(info["model"]))
    model.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    return model.eval()
