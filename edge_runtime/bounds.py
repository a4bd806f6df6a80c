"""The plausible range of each input channel, from the bundle's normalization.

A value more than `k` standard deviations from the channel's training mean is
not a reading the model was made for: fed to it, 1e308 (finite, so it passes a
finiteness check) overflows the state to NaN and every later forecast of that
stream is NaN. k is large (1000 by default) so that only absurd values are
refused, never a merely unusual one.
"""
from __future__ import annotations

DEFAULT_RANGE_STD = 1000.0


def value_bounds(normalization: dict, range_std: float = DEFAULT_RANGE_STD) -> tuple[tuple[float, float], ...]:
    """((low, high), ...) per input channel: mean -/+ range_std * std."""
    return tuple((m - range_std * s, m + range_std * s) for m, s in zip(normalization["mean"], normalization["std"]))


def out_of_range(values, bounds) -> str | None:
    """None when every value is inside its channel's bounds, else a one-line reason naming the first that is not."""
    for k, (value, (low, high)) in enumerate(zip(values, bounds)):
        if not low <= value <= high:
            return f"value {k}: {value!r} outside the channel's plausible range [{low:.6g}, {high:.6g}]"
    return None
