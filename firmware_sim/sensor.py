"""The sensor side: a source stream, an ADC, and injected faults.

The source is either synthetic (numpy only: a daily-cycle-like oscillation,
a slow random walk and noise around the bundle's own training mean and
spread) or a CSV log (for example runs/<name>/test.csv). The ADC turns the
physical value into a code (bits, range, Gaussian noise in LSBs, clipping at
the rails) and back into sensor units, which is what the firmware reads.

Faults act where they act on real hardware: a spike and a drift add to the
physical signal; stuck-at freezes the ADC code; saturation pins it to the
top rail; dropout loses the sample (the firmware gets nothing that tick).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.csvrows import CsvRows

FAULT_KINDS = ("spike", "stuck", "dropout", "drift", "saturation")
FAULT_LENGTH = {"spike": 1, "stuck": 40, "dropout": 10, "drift": 400, "saturation": 20}  # samples


def synthetic_stream(mean, std, steps: int, seed: int = 0, period: int = 600) -> np.ndarray:
    """(steps, C) raw sensor units: an oscillation of one std, a slow walk of half a std, 5% noise."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)  # (C,)
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None]  # (T, 1)
    phase = rng.uniform(0, 2 * np.pi, mean.shape)  # (C,)
    walk = np.cumsum(rng.normal(0, 0.02, (steps, mean.size)), axis=0)
    walk = 0.5 * walk / max(1.0, float(np.abs(walk).max()))
    signal = np.sin(2 * np.pi * t / period + phase) + walk + rng.normal(0, 0.05, (steps, mean.size))
    return mean + std * signal


def csv_stream(path: str | Path, channels: list[str]) -> np.ndarray:
    """(T, C) from a CSV log with the bundle's channel names as columns."""
    with open(path, newline="") as f:
        return np.array([row.values for row in CsvRows(f, str(path), list(channels))], np.float64)


@dataclass(frozen=True)
class Adc:
    bits: int  # resolution
    low: np.ndarray  # (C,) sensor units at code 0
    high: np.ndarray  # (C,) sensor units at the top code
    noise_lsb: float  # Gaussian noise, rms, in codes

    @property
    def top(self) -> int:
        return (1 << self.bits) - 1

    @property
    def lsb(self) -> np.ndarray:
        return (self.high - self.low) / self.top

    @classmethod
    def around(cls, mean, std, bits: int = 12, spread: float = 4.0, noise_lsb: float = 1.0) -> "Adc":
        """An ADC whose range is mean +- spread*std per channel."""
        mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        return cls(bits, mean - spread * std, mean + spread * std, noise_lsb)

    def codes(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(T, C) physical values -> (T, C) int codes, noisy and clipped to [0, top]."""
        ideal = (values - self.low) / self.lsb
        return np.clip(np.rint(ideal + rng.normal(0, self.noise_lsb, values.shape)), 0, self.top).astype(np.int64)

    def volts_to_units(self, codes: np.ndarray) -> np.ndarray:
        return self.low + codes * self.lsb


@dataclass(frozen=True)
class Fault:
    kind: str
    start: int  # first affected sample
    length: int
    channel: int
    magnitude: float  # sensor units (spike height, drift end offset); unused for stuck/dropout/saturation

    @property
    def end(self) -> int:
        return self.start + self.length

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def plan_faults(kinds: list[str], steps: int, std, seed: int = 0, warmup: int = 300,
                every: int = 1000) -> list[Fault]:
    """One fault every `every` samples after the warm-up, cycling through `kinds`, on random channels.

    Spike height is 3 signal stds (inside the ADC's +-4 std range, so it is the
    residual check that has to catch it, not the range check); a drift ramps to
    3 stds over 400 samples, slow enough that no single sample looks wrong.
    """
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kind(s) {unknown}; choose from {', '.join(FAULT_KINDS)}")
    std = np.asarray(std, np.float64)
    rng = np.random.default_rng(seed)
    faults, start, i = [], warmup, 0
    while kinds and start + FAULT_LENGTH[kinds[i % len(kinds)]] < steps:
        kind = kinds[i % len(kinds)]
        channel = int(rng.integers(0, std.size))
        sign = rng.choice([-1.0, 1.0])
        magnitude = {"spike": 3.0, "drift": 3.0}.get(kind, 0.0) * float(std[channel]) * sign
        faults.append(Fault(kind, start, FAULT_LENGTH[kind], channel, magnitude))
        start += every + int(rng.integers(0, every // 4))
        i += 1
    return faults


@dataclass
class SensorTrace:
    true: np.ndarray  # (T, C) physical values without faults
    physical: np.ndarray  # (T, C) with spikes and drift added
    codes: np.ndarray  # (T, C) ADC codes after stuck/saturation
    readings: np.ndarray  # (T, C) sensor units the firmware reads; NaN where the sample dropped out
    faults: list[Fault]


def sense(true: np.ndarray, adc: Adc, faults: list[Fault], seed: int = 0) -> SensorTrace:
    physical = true.copy()
    for f in faults:
        if f.kind == "spike":
            physical[f.start:f.end, f.channel] += f.magnitude
        elif f.kind == "drift":
            physical[f.start:f.end, f.channel] += np.linspace(0, f.magnitude, f.length)
    codes = adc.codes(physical, np.random.default_rng(seed))
    dropped = np.zeros(true.shape[0], bool)
    for f in faults:
        if f.kind == "stuck":
            codes[f.start:f.end, f.channel] = codes[f.start - 1, f.channel]
        elif f.kind == "saturation":
            codes[f.start:f.end, f.channel] = adc.top
        elif f.kind == "dropout":
            dropped[f.start:f.end] = True
    readings = adc.volts_to_units(codes)
    readings[dropped] = np.nan
    return SensorTrace(true, physical, codes, readings, faults)
