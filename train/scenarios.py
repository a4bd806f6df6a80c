"""Built-in synthetic sensor streams: named, seeded, imitating real sensors.

Each scenario is a physical story, not a curve fitted to flatter a model.
`nonlinear` says in one sentence what structure no linear predictor can
capture (None for the linear-Gaussian control); the demo's acceptance rules
read it: nonlinear scenarios must match or beat the AR baseline, the linear
control must land within 5% of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Stream:
    """A multi-channel stream sampled at a fixed period."""

    name: str
    values: np.ndarray  # (T, C) float32, raw sensor units
    channels: tuple[str, ...]
    units: tuple[str, ...]
    period_s: float  # seconds between samples
    target: tuple[int, ...]  # channel indices the model forecasts
    stationary: bool  # False: the level wanders without bound (model it on differences)
    nonlinear: str | None  # what makes it nonlinear, None for a linear-Gaussian stream
    description: str


def temperature(n: int, seed: int) -> Stream:
    """A heated room sampled once a minute: indoor and outdoor thermometers.

    Outdoor air follows a daily cycle plus slowly wandering weather. The room
    loses heat to outside (Newton cooling) and a thermostat with hysteresis
    switches a heater on below 19.5 degC and off above 21 degC. The indoor
    sensor drifts slowly (ageing) and both read with noise.
    """
    rng = np.random.default_rng(seed)
    minutes = np.arange(n)
    weather = np.cumsum(rng.normal(0, 0.02, n))  # slow random weather front, degC
    weather -= np.linspace(0, weather[-1], n)  # keep the season's mean level
    outdoor = 5.0 + 5.0 * np.sin(2 * np.pi * (minutes - 540) / 1440) + weather
    loss_per_min = 1 / 240  # room time constant: 4 h
    heater_degc_per_min = 0.09
    room = np.empty(n)
    temp, heating = 20.0, False
    for t in range(n):
        heating = temp < 21.0 if heating else temp < 19.5  # hysteresis
        temp += -loss_per_min * (temp - outdoor[t]) + heater_degc_per_min * heating
        temp += rng.normal(0, 0.004)  # doors, people, sun through the window
        room[t] = temp
    drift = np.linspace(0.0, 0.3, n)  # sensor ageing over the recording
    indoor = room + drift + rng.normal(0, 0.01, n)
    outdoor_read = outdoor + rng.normal(0, 0.05, n)
    return Stream(
        name="temperature",
        values=np.stack([indoor, outdoor_read], axis=1).astype(np.float32),
        channels=("indoor", "outdoor"), units=("degC", "degC"), period_s=60.0,
        target=(0,), stationary=True,
        nonlinear="regime changes: a thermostat with hysteresis switches the heater at fixed "
        "temperatures, so the slope flips at levels a linear predictor cannot represent",
        description="heated room, 1 sample/min: daily outdoor cycle, thermostat, sensor drift, noise",
    )


def vibration(n: int, seed: int) -> Stream:
    """A single-axis MEMS accelerometer (+-2 g) on a motor sampled at 1 kHz.

    The motor alternates between idle and loaded running at random times; its
    vibration is a fundamental at the shaft speed with 2nd and 3rd harmonics,
    amplitude modulated by the load. Under load the signal exceeds the
    sensor's range and is clipped.
    """
    rng = np.random.default_rng(seed)
    regime_speed_hz = {0: 0.0, 1: 24.0, 2: 37.0}  # off, idle, loaded
    regime_amp_g = {0: 0.0, 1: 0.6, 2: 2.6}
    speed, amp = np.empty(n), np.empty(n)
    t, regime = 0, 1
    while t < n:
        length = int(rng.integers(300, 1200))
        speed[t:t + length] = regime_speed_hz[regime]
        amp[t:t + length] = regime_amp_g[regime]
        t += length
        regime = int(rng.choice([r for r in regime_speed_hz if r != regime]))
    amp = np.convolve(amp, np.ones(40) / 40, mode="same")  # spin-up and spin-down take 40 ms
    load = 1.0 + 0.15 * np.sin(2 * np.pi * np.arange(n) / 5000.0)  # slow load cycle
    phase = 2 * np.pi * np.cumsum(speed) / 1000.0
    signal = amp * load * (np.sin(phase) + 0.35 * np.sin(2 * phase + 0.5) + 0.15 * np.sin(3 * phase + 1.3))
    reading = np.clip(signal + rng.normal(0, 0.03, n), -2.0, 2.0)  # sensor range saturates
    return Stream(
        name="vibration",
        values=reading[:, None].astype(np.float32),
        channels=("accel",), units=("g",), period_s=0.001, target=(0,), stationary=True,
        nonlinear="saturation and regime changes: the +-2 g range clips the loaded motor's "
        "waveform, and the shaft speed and amplitude switch between idle and load",
        description="motor accelerometer at 1 kHz: idle/load regimes, harmonics, load modulation, clipping",
    )


def random_walk(n: int, seed: int) -> Stream:
    """A level that wanders as a Gaussian random walk, observed with white noise.

    The linear-Gaussian control: the Kalman filter (a linear predictor) is
    optimal here, so a well-fitted AR model is near the floor and no model
    should do much better.
    """
    rng = np.random.default_rng(seed)
    level = 50.0 + np.cumsum(rng.normal(0, 0.1, n))
    reading = level + rng.normal(0, 0.2, n)
    return Stream(
        name="random_walk",
        values=reading[:, None].astype(np.float32),
        channels=("level",), units=("cm",), period_s=1.0, target=(0,), stationary=False,
        nonlinear=None,
        description="tank level as a Gaussian random walk with white sensor noise (linear control)",
    )


def number_sequence(n: int, seed: int, run_length: int = 8) -> Stream:
    """The lecture's exercise as a stream: arithmetic sequences of 8 numbers.

    Each run starts at a random integer with a random integer step; after
    `run_length` numbers a new sequence begins. Within a run the next value is
    exact arithmetic; where a run ends, the best guess is the average start.
    """
    rng = np.random.default_rng(seed)
    runs = -(-n // run_length)
    starts = rng.integers(0, 100, runs)
    steps = rng.integers(1, 10, runs)
    position = np.arange(run_length)
    values = (starts[:, None] + steps[:, None] * position[None, :]).reshape(-1)[:n]
    return Stream(
        name="number_sequence",
        values=values[:, None].astype(np.float32),
        channels=("value",), units=("",), period_s=1.0, target=(0,), stationary=True,
        nonlinear="regime changes by counting: every 8th step a new sequence starts, which "
        "takes a counter a linear predictor does not have",
        description="lecture exercise: runs of 8 numbers in arithmetic progression",
    )


SCENARIOS: dict[str, Callable[[int, int], Stream]] = {
    "temperature": temperature,
    "vibration": vibration,
    "random_walk": random_walk,
    "number_sequence": number_sequence,
}


def make_stream(name: str, n: int, seed: int) -> Stream:
    """Generate scenario `name` with `n` samples; the same seed gives the same stream."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    return SCENARIOS[name](n, seed)
