"""float32 <-> integer tensors at the model's edge, for variants with integer I/O.

Follows TFLite's QUANTIZE/DEQUANTIZE: q = round(v / scale) + zero_point,
rounded half away from zero and saturated to the integer type;
v = (q - zero_point) * scale.

A state tensor may also carry units (a core graph's LSTM cell state, per unit in
its own scale: convert/core_step.py): the session's named state stays in the
trained model's units, the same for every variant, and the tensor holds value / units.
"""
from __future__ import annotations

import numpy as np


class Codec:
    """Converts values for one signature tensor; identity for float tensors."""

    def __init__(self, name: str, detail: dict, units: np.ndarray | None = None):
        self.name = name
        self.units = units  # (n,) the tensor holds value / units; None: the value itself
        self.dtype = np.dtype(detail["dtype"])
        self.integer = self.dtype.kind in "iu"
        scale, zero_point = detail["quantization"]
        if self.integer and not scale:
            raise ValueError(f"integer tensor {name!r} carries no quantization scale")
        self.scale, self.zero_point = float(scale), int(zero_point)
        if self.integer:
            info = np.iinfo(self.dtype)
            self.low, self.high = info.min, info.max

    def encode(self, values: np.ndarray) -> np.ndarray:
        if self.units is not None:
            values = (values / self.units).astype(np.float32)
        if not self.integer:
            return values
        scaled = values / self.scale
        rounded = np.trunc(scaled + np.copysign(0.5, scaled))  # half away from zero, as TFLite
        return np.clip(rounded + self.zero_point, self.low, self.high).astype(self.dtype)

    def decode(self, values: np.ndarray) -> np.ndarray:
        if self.integer:
            values = ((values.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)
        if self.units is not None:
            values = (values * self.units).astype(np.float32)
        return values

    def describe(self) -> dict:
        return {"dtype": self.dtype.name, "scale": self.scale, "zero_point": self.zero_point}
