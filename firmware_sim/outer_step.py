"""The firmware's integer outer step around a core variant (edge_runtime/binding.py, convert/core_step.py).

A core int8-io graph takes `delta` and `level` as int8 tensors and returns a
int8 `correction`; the level never enters it. On the device everything around
it is integer arithmetic on sensor counts (ADC codes), int32:

    delta_q[c] = sat8(MBQM(counts[c] - prev[c], M_delta[c]) + zp_delta)
                 M_delta[c] = count_unit[c] / (delta_std[c] * scale_delta)
    level_q[c] = sat8(MBQM(counts[c] - mean_counts[c], M_level[c]) + zp_level)
                 M_level[c] = count_unit[c] / (std[c] * scale_level)
    y_counts[o] = counts[t_o] + MBQM(correction_q[o] - zp_corr, M_out[o])
                 M_out[o] = scale_corr * delta_std[t_o] / count_unit[t_o]

MBQM is TFLite's MultiplyByQuantizedMultiplier (firmware_sim/fixedpoint.py):
one int32 multiplier and a shift per channel, computed once at start-up. The
previous reading is held in counts, so persistence is exact to the count.
Edge_runtime's Session does the same in float64; the two round a feature
differently at most by one LSB now and then (measured in tests/test_firmware_sim.py).
"""
from __future__ import annotations

import numpy as np

from firmware_sim.fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier, round_half_away


def _multipliers(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) real multipliers -> (n,) int32 multipliers and (n,) shifts."""
    pairs = [quantize_multiplier(float(r)) for r in real]
    return np.array([m for m, _ in pairs], np.int64), np.array([s for _, s in pairs], np.int64)


class IntegerOuterStep:
    """Sensor counts in, the core's int8 feature tensors out; the int8 correction back to counts."""

    def __init__(self, manifest, feature_tensors: dict, correction_tensor, offset, count_unit):
        norm = manifest.normalization
        mean, std, delta_std = (np.asarray(norm[k], np.float64) for k in ("mean", "std", "delta_std"))  # (C,)
        self.offset = np.asarray(offset, np.float64)  # (C,) sensor units at count 0
        self.unit = np.asarray(count_unit, np.float64)  # (C,) sensor units per count
        self.target = list(manifest.target)
        self.mean_counts = round_half_away((mean - self.offset) / self.unit).astype(np.int64)  # (C,)
        self.features = {}  # name -> (tensor, multiplier, shift)
        for name, t in feature_tensors.items():
            spread = delta_std if name == "delta" else std
            self.features[name] = (t, *_multipliers(self.unit / (spread * float(t.scale[0]))))
        self.correction = correction_tensor
        self.out_multiplier, self.out_shift = _multipliers(
            float(correction_tensor.scale[0]) * delta_std[self.target] / self.unit[self.target])
        self.prev: np.ndarray | None = None  # (C,) int64 counts of the last reading

    def counts(self, x_raw) -> np.ndarray:
        """(C,) sensor units -> (C,) int64 counts (what the ADC hands the firmware)."""
        return round_half_away((np.asarray(x_raw, np.float64) - self.offset) / self.unit).astype(np.int64)

    def inputs(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """(C,) counts -> {feature: (1, C) int8}; the first reading after a (re)start primes prev."""
        previous = counts if self.prev is None else self.prev
        out = {}
        for name, (t, multiplier, shift) in self.features.items():
            base = counts - (previous if name == "delta" else self.mean_counts)  # (C,) int32 range
            q = multiply_by_quantized_multiplier(base, multiplier, shift) + int(t.zero_point[0])
            info = np.iinfo(t.dtype)
            out[name] = np.clip(q, info.min, info.max).astype(t.dtype).reshape(t.shape)
        self.prev = counts.copy()
        return out

    def forecast_counts(self, counts: np.ndarray, correction_q: np.ndarray) -> np.ndarray:
        """(C,) counts of this reading, (1, O) int8 correction -> (O,) int64 counts of the forecast."""
        centred = correction_q.reshape(-1).astype(np.int64) - int(self.correction.zero_point[0])
        return counts[self.target] + multiply_by_quantized_multiplier(centred, self.out_multiplier, self.out_shift)

    def to_units(self, counts: np.ndarray) -> np.ndarray:
        """(O,) forecast counts -> (O,) sensor units, for reports and the residual check."""
        return (self.offset[self.target] + counts * self.unit[self.target]).astype(np.float32)
