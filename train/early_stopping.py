"""Early stopping on a validation score, shared by both trainers (forecast and autocomplete)."""
from __future__ import annotations

import math

from torch import nn


class EarlyStopping:
    """Keeps the weights of the best epoch so far (lower score is better) and says when to stop:
    after `patience` epochs without improvement."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_score = math.inf
        self.best_epoch = -1
        self._weights = None

    def should_stop(self, epoch: int, score: float, model: nn.Module) -> bool:
        if score < self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self._weights = {k: v.clone() for k, v in model.state_dict().items()}
            return False
        return epoch - self.best_epoch >= self.patience

    def restore_best(self, model: nn.Module) -> None:
        """Load the best epoch's weights into `model` and put it in eval mode."""
        model.load_state_dict(self._weights)
        model.eval()
