"""Does a sensor log's level wander? Decides what `python -m train --csv` feeds the model by default.

A model that reads the level learns the range it saw in training; a level
that leaves that range (a trend, a seasonal rise, a slow drift) puts the
model, and worse its integer variants whose ranges are calibrated on the
training split, outside what they know. Such a log is better modelled on the
change alone (features: delta), as the built-in random walk is.

Only what a user has at training time is used: the training split and the
validation split (never the test split). Two figures, either one over its
limit means the level wanders:

  shift     largest |mean(val) - mean(train)| over channels, in training stds        > 1
  trend     largest |mean(last quarter of train) - mean(first quarter)|, training stds > 1

A third is recorded but does not decide: the share of validation samples with
a channel outside the training range. It also counts excursions of the
amplitude (a taller heartbeat, an earthquake) while the level stays put:
on the real series it flags an ECG and a seismogram (1.8% each, both with a
steady mean) as often as the trends it was meant for.

numpy only (no torch): the check is cheap and testable on its own.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, replace

import numpy as np

from train.config import FEATURES

SHIFT_LIMIT = 1.0
TREND_LIMIT = 1.0


@dataclass(frozen=True)
class LevelCheck:
    val_shift: float  # training stds, the largest over channels
    train_trend: float  # training stds, the largest over channels
    outside_fraction: float  # of validation samples, any channel outside the training range (recorded only)

    @property
    def wanders(self) -> bool:
        return self.val_shift > SHIFT_LIMIT or self.train_trend > TREND_LIMIT

    def figures(self) -> str:
        return (f"validation mean {self.val_shift:.2f} training std from the training mean (limit {SHIFT_LIMIT:g}), "
                f"trend across the training split {self.train_trend:.2f} std (limit {TREND_LIMIT:g}); "
                f"{self.outside_fraction:.1%} of validation outside the training range")

    def to_dict(self) -> dict:
        return {**asdict(self), "wanders": self.wanders,
                "limits": {"val_shift": SHIFT_LIMIT, "train_trend": TREND_LIMIT}}


def check_level(values: np.ndarray, split: tuple[float, float]) -> LevelCheck:
    """values: (T, C) raw sensor units; split: (train, val) fractions as the trainer cuts them."""
    values = np.asarray(values, np.float64)
    n = len(values)
    a, b = int(n * split[0]), int(n * sum(split))
    train, val = values[:a], values[a:b]
    if len(train) < 8 or len(val) < 1:
        raise ValueError(f"{n} samples are too few to check the level (train {len(train)}, validation {len(val)})")
    std = train.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)  # a constant channel: any move is measured in raw units
    low, high = train.min(axis=0), train.max(axis=0)
    outside = float(np.mean(np.any((val < low) | (val > high), axis=1)))
    shift = float(np.max(np.abs(val.mean(axis=0) - train.mean(axis=0)) / std))
    quarter = len(train) // 4
    trend = float(np.max(np.abs(train[-quarter:].mean(axis=0) - train[:quarter].mean(axis=0)) / std))
    return LevelCheck(shift, trend, outside)


def choose_csv_features(stream, features: list[str] | None, split: tuple[float, float]):
    """A CSV log's level check (train/wander.py): a wandering level marks the stream non-stationary, so it is
    modelled on the change alone unless --features says otherwise. One line on the terminal with the figures."""
    check = check_level(stream.values, split)
    chosen = features or (("delta",) if check.wanders else FEATURES)
    why = "given by --features" if features else ("the level wanders" if check.wanders else "the level is steady")
    print(f"level check: {check.figures()} -> features: {' + '.join(chosen)} ({why})", file=sys.stderr)
    record = {**check.to_dict(), "features": list(chosen), "features_given": bool(features)}
    return replace(stream, stationary=not check.wanders), record
